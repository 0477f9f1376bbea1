"""Every registered weighting trains the demo end to end, checkpoints its state, and describes itself.

The strategy list is read from the registry when the tests are collected, so
a strategy added later is covered without touching this file. Gradient-based
strategies (subclasses of `GradientWeighting`) run once in each gradient
space their parameters accept; loss-based ones once with their defaults.
A tiny spec (16 px, width-8 CNN, 240 images, CPU) keeps each run near a second.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from pydantic import ValidationError

import hydranet
from conftest import tiny_spec
from hydranet.core.checkpoint import read_checkpoint
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.core.weighting import GradientWeighting

TASKS = ("age", "gender", "ethnicity")
EPOCHS = 2
BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "weighting.py"


def _registry():
    return load_components(make_plugin_manager(entry_points=False)).weightings


def _is_gradient(entry: Any) -> bool:
    return isinstance(entry.factory, type) and issubclass(entry.factory, GradientWeighting)


def _accepts(entry: Any, space: str) -> bool:
    """Whether the strategy's params model takes `grad_space: <space>` (a strategy may support one space only)."""
    if entry.params is None or "grad_space" not in entry.params.model_fields:
        return False
    try:
        entry.params.model_validate({"grad_space": space})
    except ValidationError:
        return False
    return True


def _cases() -> list[Any]:
    cases = []
    for entry in _registry():
        if _is_gradient(entry):
            spaces = [s for s in ("features", "params") if _accepts(entry, s)] or [None]
        else:
            spaces = [None]
        cases += [pytest.param(entry.name, space, id=f"{entry.name}-{space or 'default'}") for space in spaces]
    return cases


def _assert_same(got: Any, want: Any, where: str) -> None:
    """Tensors equal, recursing into the plain containers an `_extra_state` entry may hold."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and torch.equal(got.cpu(), want.cpu()), f"{where} did not round-trip"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: keys differ"
        for key in want:
            _assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{where}: lengths differ"
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == want or (got != got and want != want), f"{where}: {got!r} != {want!r}"


def _train(faces, tmp_path, name: str, space: str | None):
    weighting: dict[str, Any] = {"name": name}
    if space is not None:
        weighting["grad_space"] = space
    spec = tiny_spec(faces, epochs=EPOCHS)
    spec["weighting"] = weighting
    resolved = load_spec(spec)
    result = hydranet.train(resolved, out_dir=tmp_path / "run", progress=False, echo=False)
    return resolved, result


def test_every_gradient_strategy_accepts_a_grad_space():
    """Guards the parametrisation itself: a gradient strategy whose params lost `grad_space` would run in one space only."""
    for entry in _registry():
        if _is_gradient(entry):
            assert _accepts(entry, "features") or _accepts(entry, "params"), (
                f"{entry.name} is gradient-based but its params take no grad_space")


@pytest.mark.parametrize(("name", "space"), _cases())
def test_trains_two_epochs_and_round_trips_its_state(faces, tmp_path, name, space):
    resolved, result = _train(faces, tmp_path, name, space)
    run = result.run_dir

    rows = list(csv.DictReader((run / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    assert [int(float(r["epoch"])) for r in rows] == list(range(1, EPOCHS + 1))
    for row in rows:
        for task in TASKS:
            for column in (f"train_loss.{task}", f"val_loss.{task}", f"weight.{task}"):
                assert column in row, f"{name}: metrics.csv has no {column} column"
                value = float(row[column])
                assert math.isfinite(value), f"{name} ({space}): {column} = {value} at epoch {row['epoch']}"
        losses = [float(v) for k, v in row.items() if "loss" in k]
        assert all(math.isfinite(v) for v in losses), (name, row)

    assert (run / "last.pt").is_file()
    checkpoint = read_checkpoint(run / "last.pt")  # weights_only load, as `hydranet eval` does
    assert checkpoint["epoch"] == EPOCHS
    saved = checkpoint["weighting"]
    assert checkpoint["spec"]["weighting"]["name"] == name
    if space is not None:
        assert checkpoint["spec"]["weighting"]["grad_space"] == space

    fresh = resolved.build_weighting(resolved.build_tasks())
    fresh.load_state_dict(saved)  # strict: same keys and shapes as a newly built strategy
    restored = fresh.state_dict()
    assert restored.keys() == saved.keys()
    for key, value in saved.items():
        _assert_same(restored[key], value, f"{name}: {key}")
    weights = fresh.weights()
    assert weights.shape == (len(TASKS),) and torch.isfinite(weights).all()


def test_state_changes_are_restored(faces, tmp_path):
    """uncertainty and dwa must leave epoch 2 with a state that differs from a fresh one, and restore it."""
    for name in ("uncertainty", "dwa"):
        resolved, result = _train(faces, tmp_path / name, name, None)
        saved = read_checkpoint(result.run_dir / "last.pt")["weighting"]
        fresh = resolved.build_weighting(resolved.build_tasks())
        initial = fresh.weights().clone()
        fresh.load_state_dict(saved)
        assert not torch.allclose(fresh.weights(), initial), f"{name}: restoring the checkpoint changed nothing"


# ---------------------------------------------------------------- descriptions and references


def _builtins():
    return [e for e in _registry() if e.plugin.startswith("hydranet.")]


@pytest.mark.parametrize("entry", _builtins(), ids=lambda e: e.name)
def test_builtin_is_registered_by_its_own_module_with_description_and_reference(entry):
    factory = entry.factory
    assert isinstance(factory, type), f"{entry.name}: built-in strategies are classes"
    assert entry.plugin == f"hydranet.plugins.weighting.{entry.name}" == factory.__module__
    assert entry.description == factory.description
    assert factory.description.strip(), f"{entry.name} has no one-line description"
    assert "\n" not in factory.description.strip(), f"{entry.name}: the description must be one line"
    assert factory.reference.strip(), f"{entry.name} has no reference"
    assert entry.description.strip(), f"{entry.name} was registered without a description"


def test_list_weightings_shows_description_and_reference():
    from hydranet.core.cli import cli

    result = CliRunner().invoke(cli, ["list", "weightings"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the layout may wrap or pad; compare words
    for entry in _builtins():
        assert entry.name in text
        assert " ".join(entry.factory.description.split()) in text, entry.name
        assert "reference: " + " ".join(entry.factory.reference.split()) in text, entry.name
        kind = "gradient" if _is_gradient(entry) else "loss"
        line = next(line for line in result.output.splitlines() if line.strip().startswith(entry.name + " "))
        assert kind in line, (entry.name, line)
    assert "resnet18" not in result.output


def test_list_falls_back_for_plugins_without_metadata(monkeypatch):
    """A third-party factory function, or a class without `description`/`reference`, still lists cleanly."""
    import hydranet.core.plugins as plugins
    from hydranet.core.cli import cli
    from hydranet.core.interfaces import Weighting

    class Bare(Weighting):
        """Bare class docstring line."""

    def make_halves(tasks):
        """Half weights, from a plain function."""
        raise NotImplementedError

    class Plugin:
        @hydranet.hookimpl
        def register_weightings(self, register):
            register("bare", Bare)
            register("halves", make_halves)

    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(Plugin(), "third-party", distribution="x", version="1", builtin=False)
    components = load_components(pm)
    monkeypatch.setattr(plugins, "default_components", lambda: components)
    result = CliRunner().invoke(cli, ["list", "weightings"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    bare = lines.index(next(line for line in lines if line.strip().startswith("bare ")))
    assert "Bare class docstring line." in lines[bare] and "loss" in lines[bare]
    assert lines[bare + 1].strip() == "reference: (no reference given)"
    halves = lines.index(next(line for line in lines if line.strip().startswith("halves ")))
    assert "Half weights, from a plain function." in lines[halves]
    assert lines[halves + 1].strip() == "reference: (no reference given)"
    assert "sum" in result.output  # the built-ins are still listed


# ---------------------------------------------------------------- the speed benchmark


def test_weighting_benchmark_runs_every_variant(tmp_path):
    """benchmarks/weighting.py end to end on a tiny model: every variant timed, ratios against sum, targets."""
    gradient = next((e.name for e in _registry() if _is_gradient(e)), None)
    chosen = ["dwa"] + ([gradient] if gradient else [])
    out = tmp_path / "bench.json"
    command = [sys.executable, str(BENCHMARK), "--device", "cpu", "--backbone", "tiny", "--size", "16",
               "--batch-size", "16", "--steps", "2", "--repeats", "2", "--warmup", "1",
               "--strategies", ",".join(chosen), "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    rows = {v["label"]: v for v in report["variants"]}
    expected = {"sum", "sum (control)", "dwa"}
    if gradient:
        expected |= {f"{gradient} [{s}]" for s in ("features", "params")
                     if _accepts(_registry().get(gradient), s)}
    assert set(rows) == expected
    assert report["baseline_ms"] > 0
    for label, row in rows.items():
        assert row["error"] is None, (label, row["error"])
        assert len(row["block_ms"]) == 2 and row["ms"] > 0 and row["ratio"] > 0
    assert rows["sum"]["ratio"] == 1.0 and rows["sum"]["verdict"] == "baseline"
    assert rows["dwa"]["target"] == 1.05 and rows["dwa"]["verdict"] in ("pass", "FAIL")
    if gradient:
        targets = {rows[label]["target"] for label in expected if label.startswith(gradient)}
        assert targets <= {1.3, 3.5}
    assert "| strategy |" in done.stdout and "| dwa |" in done.stdout


def test_weighting_benchmark_rejects_unknown_strategy():
    done = subprocess.run([sys.executable, str(BENCHMARK), "--device", "cpu", "--strategies", "dwaa"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "unknown weighting 'dwaa'" in done.stderr and "did you mean 'dwa'" in done.stderr
