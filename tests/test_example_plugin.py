"""The example third-party plugin (examples/hydranet-agegroup), found the way an installed one is.

The package is not pip-installed into the test environment: its `src/` goes on
sys.path and a `.dist-info` folder built from what its pyproject.toml declares
goes next to it, which is all importlib.metadata looks at. If the pyproject's
name, version or entry point drift, these tests follow them (or fail).
"""

from __future__ import annotations

import csv
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import install_as_if_pip, make_tasks
from hydranet.core.errors import SpecError
from hydranet.core.plugins import default_components, load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.core.engine import train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hydranet-agegroup"
SPEC = EXAMPLE / "spec.yaml"
PLUGIN = "agegroup"


def declared() -> dict:
    """The [project] table of the example's pyproject.toml."""
    return tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The example as pip would leave it: importable source plus a .dist-info with its entry points."""
    project = install_as_if_pip(EXAMPLE, tmp_path / "site", monkeypatch)
    yield project
    for name in [m for m in sys.modules if m == "hydranet_agegroup" or m.startswith("hydranet_agegroup.")]:
        del sys.modules[name]


@pytest.fixture
def components(installed):
    """Built-ins plus every entry-point plugin, on a fresh manager (not the per-process cache)."""
    return load_components(make_plugin_manager(allow=None))


def build_task(components, **params):
    entry = components.tasks.get("age_group")
    return entry.factory("age_group", entry.validate_params(params))


def build_weighting(components, task_names=("age", "gender", "age_group"), **params):
    tasks = make_tasks(components, *task_names)
    entry = components.weightings.get("inverse_loss")
    return entry.factory(tasks, entry.validate_params(params))


# ---------------------------------------------------------------- packaging and discovery


def test_pyproject_declares_the_documented_package():
    project = declared()
    assert (project["name"], project["version"]) == ("hydranet-agegroup", "0.1.0")
    assert project["entry-points"]["hydranet"] == {PLUGIN: "hydranet_agegroup.plugin"}
    assert "hydranet" in [re.split(r"[\s<>=!~\[;]", d, maxsplit=1)[0] for d in project["dependencies"]]


def test_entry_point_loads_with_its_distribution_and_version(installed):
    pm = make_plugin_manager(allow=None)
    info = pm.info[PLUGIN]
    assert (info.distribution, info.version, info.builtin) == (installed["name"], installed["version"], False)
    assert pm.load_errors() == []
    # the code came from the example's source folder, through the entry point
    module = sys.modules["hydranet_agegroup.plugin"]
    assert Path(module.__file__).resolve().is_relative_to(EXAMPLE / "src")
    components = load_components(pm)
    assert info.components == {"tasks": ["age_group"], "weightings": ["inverse_loss"]}
    assert components.tasks.get("age_group").plugin == PLUGIN
    assert components.weightings.get("inverse_loss").plugin == PLUGIN


def test_allow_list_naming_the_plugin_loads_it(installed, monkeypatch):
    monkeypatch.setenv("HYDRANET_PLUGINS", PLUGIN)
    assert PLUGIN in make_plugin_manager().info


def test_hydranet_list_and_plugins_show_the_components(installed):
    from hydranet.core.cli import cli

    default_components.cache_clear()  # the CLI reads the per-process components
    try:
        listing = CliRunner().invoke(cli, ["list"], catch_exceptions=False).output
        plugins = CliRunner().invoke(cli, ["plugins"], catch_exceptions=False).output
    finally:
        default_components.cache_clear()  # do not leak this plugin into other tests
    rows = {line.split()[0]: line for line in listing.splitlines() if line.strip()}
    assert "Age band" in rows["age_group"] and rows["age_group"].rstrip().endswith(PLUGIN)
    assert "1/(loss + eps)" in rows["inverse_loss"] and rows["inverse_loss"].rstrip().endswith(PLUGIN)
    assert f"{PLUGIN}  (hydranet-agegroup 0.1.0)" in plugins
    assert "tasks: age_group" in plugins and "weightings: inverse_loss" in plugins


# ---------------------------------------------------------------- the age_group task


@pytest.mark.parametrize("raw, expected", [
    ("0", 0), ("12", 0), ("12.9", 0), ("13", 1), ("19", 1), ("20", 2), (" 59 ", 2), ("60", 3), ("116", 3),
    (None, None), ("", None), ("abc", None), ("-1", None), ("nan", None), ("inf", None),
])
def test_age_group_buckets_at_the_boundaries(components, raw, expected):
    task = build_task(components)
    record = {} if raw is None else {"age": raw}
    assert task.parse_label(record) == expected


def test_age_group_boundaries_and_names_are_parameters(components):
    task = build_task(components, boundaries=[18, 65], class_names=["minor", "adult", "senior"])
    assert [task.parse_label({"age": a}) for a in ("17", "18", "64", "65")] == [0, 1, 1, 2]
    assert task.out_features == 3
    assert build_task(components, label="years").parse_label({"years": "70", "age": "5"}) == 3


@pytest.mark.parametrize("params, path, words", [
    ({"boundaries": [18, 65]}, "tasks[0]", "2 boundaries make 3 bands, but class_names has 4 names"),
    ({"boundaries": [20, 13, 60]}, "tasks[0]", "strictly increasing"),
    ({"boundarys": [1]}, "tasks[0].boundarys", "did you mean 'boundaries'"),
])
def test_bad_age_group_params_are_spec_errors_with_a_path(components, params, path, words):
    raw = {"tasks": [{"name": "age_group", **params}], "data": {"name": "utkface", "root": "x"}}
    with pytest.raises(SpecError) as caught:
        load_spec(raw, components=components)
    [(where, message)] = caught.value.problems
    assert where == path and words in message, caught.value.problems


def test_age_group_reuses_the_multiclass_loss_metrics_and_decode(components):
    task = build_task(components)
    output = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0], [5.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([1.0, 3.0, float("nan")])  # the third row has no label
    expected = F.cross_entropy(output[:2], target[:2].long())
    assert torch.allclose(task.loss(output, target), expected)
    assert set(task.metrics()) == {"accuracy", "macro_f1"}
    assert [row["class"] for row in task.decode(output)] == ["child", "senior", "child"]


# ---------------------------------------------------------------- the inverse_loss weighting


def test_inverse_loss_matches_a_hand_computation(components):
    weighting = build_weighting(components, eps=0.5)
    assert torch.equal(weighting.weights(), torch.ones(3))  # before the first step
    losses = torch.tensor([1.5, 0.5, 3.5], requires_grad=True)
    # 1 / (L + eps) = 1/2, 1/1, 1/4; sum 7/4; times K = 3 / (7/4): weights 6/7, 12/7, 3/7
    expected = torch.tensor([6 / 7, 12 / 7, 3 / 7])
    total = weighting.combine(losses)
    assert torch.allclose(weighting.weights(), expected)
    assert math.isclose(float(weighting.weights().sum()), 3.0, rel_tol=1e-6)
    # 6/7 * 1.5 + 12/7 * 0.5 + 3/7 * 3.5 = (9 + 6 + 10.5) / 7
    assert math.isclose(float(total.detach()), 25.5 / 7, rel_tol=1e-6)
    # w_i * (L_i + eps) is the same for every task (K / (7/4) = 12/7): each contributes about equally
    assert torch.allclose(weighting.weights() * (losses.detach() + 0.5), torch.full((3,), 12 / 7))
    total.backward()  # weights are constants for the gradient: dTotal/dL_i = w_i
    assert torch.allclose(losses.grad, expected)


def test_inverse_loss_gives_no_weight_to_a_task_without_labels_in_the_batch(components):
    weighting = build_weighting(components, eps=0.5)
    # masked_mean gives exactly 0 for a task with no labelled rows; the others share K:
    # 1/(1.5+0.5) = 1/2, 1/(3.5+0.5) = 1/4; sum 3/4; weights 0, 2, 1
    weighting.combine(torch.tensor([0.0, 1.5, 3.5]))
    assert torch.allclose(weighting.weights(), torch.tensor([0.0, 2.0, 1.0]))
    weighting.combine(torch.zeros(3))  # nothing labelled at all: no NaN
    assert torch.equal(weighting.weights(), torch.zeros(3))


def test_inverse_loss_never_reads_a_value_on_the_host(components):
    # Meta tensors have no data: any .item(), float() or `if tensor:` in combine would raise.
    weighting = build_weighting(components).to("meta")
    total = weighting.combine(torch.ones(3, device="meta"))
    assert total.device.type == "meta" and total.shape == ()


def test_inverse_loss_rejects_a_wrong_shape_and_a_bad_eps(components):
    weighting = build_weighting(components)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        weighting.combine(torch.ones(3, 1))
    raw = {"tasks": ["age"], "data": {"name": "utkface", "root": "x"}, "weighting": {"name": "inverse_loss", "eps": 0}}
    with pytest.raises(SpecError) as caught:
        load_spec(raw, components=components)
    assert [path for path, _ in caught.value.problems] == ["weighting.eps"]


# ---------------------------------------------------------------- the example spec, end to end


def test_example_spec_resolves_as_shipped(components):
    spec = load_spec(SPEC, components=components)
    assert spec.task_names == ["age", "gender", "age_group"]
    assert spec.weighting.entry.name == "inverse_loss" and spec.weighting.entry.plugin == PLUGIN
    assert (spec.backbone.entry.name, spec.data.entry.name) == ("tiny", "synthetic")


def test_example_spec_trains_end_to_end(components, faces, tmp_path):
    from hydranet.core.inference import TrainedModel

    # The shipped spec, pointed at the session's tiny synthetic folder (same drawing settings, so it is reused).
    overrides = [f"data.root={faces}", "data.count=240", "data.size=32", "data.seed=3", "data.val_fraction=0.25",
                 "image_size=16", "backbone.width=8", "train.epochs=2", "train.batch_size=32", "train.device=cpu"]
    spec = load_spec(SPEC, overrides, components=components)
    out = tmp_path / "run"
    result = train(spec, out_dir=out, components=components, progress=False, echo=False)

    for name in ("metrics.csv", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "metrics.csv", encoding="utf-8")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"weight.age_group", "train_loss.age_group", "val.age_group.accuracy", "val.age_group.macro_f1"} <= set(rows[0])
    for row in rows:
        for task in spec.task_names:
            assert math.isfinite(float(row[f"train_loss.{task}"])), (task, row)
            assert math.isfinite(float(row[f"val_loss.{task}"])), (task, row)
    # each epoch logs the mean of the weights inverse_loss set at its steps: each step's sum to K = 3, and
    # they are not the starting ones (all 1), which no step applied
    weights = [[float(r[f"weight.{t}"]) for t in spec.task_names] for r in rows]
    for epoch_weights in weights:
        assert math.isclose(sum(epoch_weights), 3.0, rel_tol=1e-4) and epoch_weights != [1.0, 1.0, 1.0]
    assert len(result.history) == 2

    # the checkpoint names the plugin and its distribution, and rebuilds with the plugin's task
    checkpoint = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    by_name = {t["name"]: t for t in checkpoint["tasks"]}
    assert by_name["age_group"]["plugin"] == PLUGIN and by_name["age_group"]["distribution"] == "hydranet-agegroup"
    model = TrainedModel.from_checkpoint(out / "best.pt", components=components)
    prediction = model.predict(next(p for p in faces.iterdir() if p.name.endswith(".jpg")))[0]
    assert prediction["age_group"]["class"] in {"child", "teen", "adult", "senior"}


def test_empty_allow_list_leaves_the_plugin_out(installed, monkeypatch):
    monkeypatch.setenv("HYDRANET_PLUGINS", "")
    pm = make_plugin_manager()
    assert PLUGIN not in pm.info and "hydranet_agegroup.plugin" not in sys.modules
    with pytest.raises(SpecError) as caught:
        load_spec(SPEC, components=load_components(pm))
    problems = dict(caught.value.problems)
    assert "unknown task 'age_group'" in problems["tasks[2].name"]
    assert "unknown weighting 'inverse_loss'" in problems["weighting.name"]
    assert "age_group" in str(caught.value)
