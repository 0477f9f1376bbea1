"""`hydranet eval` of plugin tasks whose head does not output one value per class, or more than one value.

The task contract does not tie a classification task's `out_features` to its
number of classes: an ordinal task with cumulative (CORAL) logits outputs one
value fewer than its classes, a multi-label task one logit per tag with a
bitmask label. Eval gives their metrics, and a confusion matrix from the
classes their `decode` gives where it can; where no matrix fits, one note
names the task and why, instead of a traceback. A regression head of two
values (a mean and a log-variance) gets its error distribution as well.

One tiny run (one epoch, 16 px) on the `faces` fixture with five inline
tasks serves every test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict
from torch import Tensor

import hydranet
from conftest import tiny_spec
from hydranet.core import inference as inference_module
from hydranet.core.cli import cli
from hydranet.core.metrics import MaskedMean
from hydranet.core.plugins import Components, load_components, make_plugin_manager
from hydranet.core.spec import load_spec

GROUPS = ["0-19", "20-39", "40-59", "60+"]  # the ordinal task's classes


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def age_of(record: Mapping[str, str]) -> float | None:
    try:
        age = float(record["age"])
    except (KeyError, ValueError):
        return None
    return age if math.isfinite(age) and age >= 0 else None


class OrdinalHit(MaskedMean):
    """Share of rows whose predicted group (the count of cumulative logits above 0) is the true one."""

    def row_values(self, output: Tensor, target: Tensor) -> Tensor:
        return ((output > 0).sum(dim=1) == target.long()).float()


class AgeGroup(hydranet.Task):
    """Age group as an ordinal task: K - 1 cumulative logits (CORAL), P(group > j) for each j."""

    problem = "classification"
    named = True  # whether it gives class_names (the variant without them cannot be drawn as a matrix)

    def __init__(self, name: str, params: NoParams):
        super().__init__(name, "age", hidden=8)
        if self.named:
            self.class_names = list(GROUPS)

    @property
    def out_features(self) -> int:
        return len(GROUPS) - 1

    def parse_label(self, record: Mapping[str, str]) -> int | None:
        age = age_of(record)
        return None if age is None else min(int(age // 20), len(GROUPS) - 1)

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        levels = (target.long()[:, None] > torch.arange(output.shape[1], device=output.device)).float()
        return F.binary_cross_entropy_with_logits(output, levels, reduction="none").sum(dim=1)

    def metrics(self) -> dict[str, hydranet.Metric]:
        return {"accuracy": OrdinalHit()}

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        return [{"class": GROUPS[int(n)]} for n in (output > 0).sum(dim=1).tolist()]


class UnnamedAgeGroup(AgeGroup):
    """The same ordinal task without class_names."""

    named = False


class CodedAgeGroup(AgeGroup):
    """The same ordinal task whose decode gives a level, not a "class": nothing tells which class it predicts."""

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        return [{"level": int(n)} for n in (output > 0).sum(dim=1).tolist()]


class TraitsHit(MaskedMean):
    """Share of rows whose every tag is predicted right."""

    def row_values(self, output: Tensor, target: Tensor) -> Tensor:
        bits = (target.long()[:, None] >> torch.arange(output.shape[1], device=output.device)) & 1
        return ((output > 0).long() == bits).all(dim=1).float()


class Traits(hydranet.Task):
    """Multi-label: one logit per tag (female, over 50); the label is a bitmask of the tags."""

    problem = "classification"

    def __init__(self, name: str, params: NoParams):
        super().__init__(name, "age", hidden=8)
        self.class_names = ["female", "over 50"]

    @property
    def out_features(self) -> int:
        return 2

    def parse_label(self, record: Mapping[str, str]) -> int | None:
        age = age_of(record)
        if age is None or record.get("gender") not in ("0", "1"):
            return None
        return int(record["gender"]) + 2 * int(age > 50)

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        bits = ((target.long()[:, None] >> torch.arange(output.shape[1], device=output.device)) & 1).float()
        return F.binary_cross_entropy_with_logits(output, bits, reduction="none").sum(dim=1)

    def metrics(self) -> dict[str, hydranet.Metric]:
        return {"exact": TraitsHit()}

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        return [{"tags": [n for n, on in zip(self.class_names, row) if on]} for row in (output > 0).tolist()]


class GaussianMae(MaskedMean):
    higher_is_better = False

    def row_values(self, output: Tensor, target: Tensor) -> Tensor:
        return (output[:, 0] - target).abs()


class GaussianAge(hydranet.Task):
    """Regression with two outputs, a mean (years) and a log-variance, trained by Gaussian NLL."""

    problem = "regression"

    def __init__(self, name: str, params: NoParams):
        super().__init__(name, "age", hidden=8)

    @property
    def out_features(self) -> int:
        return 2

    def parse_label(self, record: Mapping[str, str]) -> float | None:
        return age_of(record)

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return 0.5 * (output[:, 1] + (output[:, 0] - target) ** 2 * torch.exp(-output[:, 1]))

    def metrics(self) -> dict[str, hydranet.Metric]:
        return {"mae": GaussianMae()}

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        return [{"value": mean, "unit": "years", "std": math.exp(0.5 * logvar)}
                for mean, logvar in output.tolist()]


def components_with_tasks() -> Components:
    def register_tasks(self, register):
        register("age_group", AgeGroup, params=NoParams)
        register("unnamed_group", UnnamedAgeGroup, params=NoParams)
        register("coded_group", CodedAgeGroup, params=NoParams)
        register("traits", Traits, params=NoParams)
        register("gaussian_age", GaussianAge, params=NoParams)

    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(type("Plugin", (), {"register_tasks": hydranet.hookimpl(register_tasks)})(), "shapes_plugin",
                  distribution="hydranet-shapes", version="1.0", builtin=False)
    return load_components(pm)


@pytest.fixture(scope="module")
def run(faces, tmp_path_factory) -> Path:
    components = components_with_tasks()
    raw = tiny_spec(faces, epochs=1)
    raw["tasks"] = ["age_group", "unnamed_group", "coded_group", "traits", "gaussian_age", "gender"]
    out = tmp_path_factory.mktemp("shapes") / "run"
    hydranet.train(load_spec(raw, components=components), out_dir=out, components=components, progress=False,
                   echo=False)
    return out / "best.pt"


@pytest.fixture
def evaluate(run, monkeypatch):
    """`hydranet eval RUN/best.pt ARGS` with the inline tasks installed; asserts it succeeded."""
    monkeypatch.setattr(inference_module, "default_components", components_with_tasks)

    def invoke(*args: str):
        result = CliRunner().invoke(cli, ["eval", str(run), "--device", "cpu", "--no-progress", *args])
        assert result.exit_code == 0 and result.exception is None, result.output
        assert "Traceback" not in result.output
        return result

    return invoke


def test_eval_shows_metrics_and_says_which_tasks_get_no_confusion_matrix(evaluate):
    output = evaluate().stdout
    for metric in ("accuracy", "exact", "mae"):
        assert metric in output
    # ordinal with class_names: the matrix counts the classes its decode gives, one row and column per class
    assert "age_group: confusion matrix" in output
    table = output.split("age_group: confusion matrix", 1)[1]
    assert all(group in table.split("\n\n", 1)[0] for group in GROUPS)
    # no matrix fits these: one note each, naming the task and why
    traits = [line for line in output.splitlines() if "traits" in line and "confusion matrix" in line]
    assert len(traits) == 1 and "no confusion matrix for task 'traits'" in traits[0]
    assert "not class indices" in traits[0]
    assert "no confusion matrix for task 'unnamed_group'" in output
    assert ("no confusion matrix for task 'coded_group': its head outputs 3 values for 4 classes and its decode "
            "gives no \"class\" among its class_names") in output
    assert "gaussian_age: error distribution (predicted - true, in years)" in output
    assert "gender: confusion matrix" in output  # the built-in tasks are unchanged


def test_eval_json_has_every_metric_and_the_notes(evaluate):
    report = json.loads(evaluate("--json").stdout)
    assert set(report["metrics"]) == {"age_group", "unnamed_group", "coded_group", "traits", "gaussian_age", "gender"}
    confusion = report["confusion_matrices"]
    group = confusion["age_group"]
    assert group["classes"] == GROUPS and len(group["confusion_matrix"]) == len(GROUPS)
    assert sum(map(sum, group["confusion_matrix"])) == report["labelled"]["age_group"]
    for task in ("traits", "unnamed_group", "coded_group"):
        assert confusion[task]["confusion_matrix"] is None
        assert confusion[task]["note"].startswith(f"no confusion matrix for task '{task}'")
    gaussian = report["error_distributions"]["gaussian_age"]
    assert gaussian["count"] == report["labelled"]["gaussian_age"] and "warning" not in gaussian
    # the distribution is of the mean the head outputs, which the metric scores too
    assert gaussian["mae"] == pytest.approx(report["metrics"]["gaussian_age"]["mae"], rel=1e-3, abs=0.05)


def test_the_ordinal_matrix_agrees_with_its_metric(run):
    model = hydranet.load(run, components=components_with_tasks())
    evaluation = model.evaluate()
    matrix = torch.tensor(evaluation.details["age_group"]["confusion_matrix"])
    labelled = evaluation.result.labelled["age_group"]
    assert float(matrix.diagonal().sum()) / labelled == pytest.approx(
        evaluation.result.metrics["age_group"]["accuracy"], abs=1e-6)
