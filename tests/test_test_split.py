"""data.test_fraction: a held-out test split, scored once with the best epoch's weights, reported beside
the validation metrics that chose that epoch."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_spec


def _old_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The train/validation split as the code made it before the test split existed (copied from it)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return order[n_val:].sort().values, order[:n_val].sort().values


@pytest.mark.parametrize("n,val", [(240, 0.25), (12, 0.25), (2, 0.5), (100, 0.0), (7, 0.9)])
def test_no_test_fraction_gives_exactly_the_old_split(n, val):
    from hydranet.core.data import split_indices

    for seed in (0, 1, 17):
        parts = split_indices(n, val, seed)
        assert len(parts) == 2
        old = _old_split(n, val, seed)
        assert torch.equal(parts[0], old[0]) and torch.equal(parts[1], old[1])
        parts = split_indices(n, val, seed, 0.0)
        assert len(parts) == 2 and torch.equal(parts[0], old[0]) and torch.equal(parts[1], old[1])


def test_test_split_is_disjoint_seeded_and_keeps_the_validation_images():
    from hydranet.core.data import split_indices

    train, val, test = split_indices(240, 0.25, 0, 0.2)
    assert (train.numel(), val.numel(), test.numel()) == (132, 60, 48)
    sets = [set(train.tolist()), set(val.tolist()), set(test.tolist())]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    assert sets[0] | sets[1] | sets[2] == set(range(240))
    again = split_indices(240, 0.25, 0, 0.2)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again))
    other = split_indices(240, 0.25, 1, 0.2)
    assert not torch.equal(test, other[2])
    assert torch.equal(val, _old_split(240, 0.25, 0)[1])  # the validation images are those without a test split
    # a tiny dataset still keeps a training image
    train, val, test = split_indices(3, 0.4, 0, 0.4)
    assert train.numel() >= 1 and val.numel() >= 1


def test_prepared_data_split_and_log_line(faces, tmp_path):
    import hydranet
    from hydranet.core.engine import load_prepared_data

    spec = tiny_spec(faces)
    plain = hydranet.load_spec(spec)
    data = load_prepared_data(plain, plain.build_tasks(), progress=False)
    assert data.test_index.numel() == 0 and data.usable == 240
    spec["data"]["test_fraction"] = 0.2
    held = hydranet.load_spec(spec)
    with_test = load_prepared_data(held, held.build_tasks(), progress=False)
    assert torch.equal(with_test.val_index, data.val_index)
    parts = [set(with_test.train_index.tolist()), set(with_test.val_index.tolist()), set(with_test.test_index.tolist())]
    assert with_test.test_index.numel() == 48 and with_test.usable == 240
    assert not parts[0] & parts[2] and not parts[1] & parts[2]


def test_spec_refuses_val_and_test_that_leave_nothing_to_train(tmp_path):
    from hydranet.core.cli import cli

    spec = tmp_path / "s.yaml"
    spec.write_text("tasks: [age]\ndata: {name: synthetic, val_fraction: 0.6, test_fraction: 0.4}\n")
    result = CliRunner().invoke(cli, ["spec", "validate", str(spec)])
    assert result.exit_code != 0
    assert "test_fraction" in result.output and "less than 1" in result.output
    spec.write_text("tasks: [age]\ndata: {name: synthetic, val_fraction: 0.2, test_fraction: 0.1}\n")
    assert CliRunner().invoke(cli, ["spec", "validate", str(spec)]).exit_code == 0


@pytest.fixture(scope="module")
def test_run(faces, tmp_path_factory):
    import hydranet

    spec = tiny_spec(faces)
    spec["data"]["test_fraction"] = 0.2
    out = tmp_path_factory.mktemp("test-split") / "run"
    return hydranet.train(spec, out_dir=out, progress=False, echo=False)


def test_run_reports_test_metrics_of_the_best_epoch(test_run):
    summary = json.loads((test_run.run_dir / "summary.json").read_text())
    assert summary["test_epoch"] == test_run.best_epoch >= 1
    assert summary["test"] == test_run.test
    assert set(test_run.test) == {"age", "gender", "ethnicity"}
    assert test_run.test_images == 48
    log = (test_run.run_dir / "train.log").read_text()
    assert "132 train / 60 validation / 48 test" in log
    assert f"weights of epoch {test_run.best_epoch}" in log


def test_eval_split_test_matches_the_run(test_run):
    from hydranet.core.cli import cli

    result = CliRunner().invoke(cli, ["eval", str(test_run.run_dir / "best.pt"), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == 48
    for task, metrics in test_run.test.items():
        for metric, value in metrics.items():
            assert math.isclose(report["metrics"][task][metric], value, rel_tol=1e-6, abs_tol=1e-7)


def test_compare_split_test(test_run, checkpoint):
    from hydranet.core.cli import cli

    result = CliRunner().invoke(cli, ["compare", str(test_run.run_dir), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] == "test"
    assert report["runs"][0]["metrics"]["age"]["mae"] == pytest.approx(test_run.test["age"]["mae"])
    # a run without a test split is refused, naming it, or left out with --skip-bad
    plain = checkpoint.parent
    refused = CliRunner().invoke(cli, ["compare", str(test_run.run_dir), str(plain), "--split", "test"])
    assert refused.exit_code != 0 and str(plain) in refused.output and "test_fraction" in refused.output
    skipped = CliRunner().invoke(cli, ["compare", str(test_run.run_dir), str(plain), "--split", "test",
                                       "--skip-bad", "--json"])
    assert skipped.exit_code == 0, skipped.output
    assert [run["run"] for run in json.loads(skipped.stdout)["runs"]] == [str(test_run.run_dir)]
    # the default is still the validation metrics
    val = json.loads(CliRunner().invoke(cli, ["compare", str(test_run.run_dir), "--json"]).stdout)
    assert "split" not in val
    assert val["runs"][0]["metrics"]["age"]["mae"] == pytest.approx(test_run.best["age"]["mae"])


def test_eval_split_test_without_a_test_split_is_refused(checkpoint):
    from hydranet.core.cli import cli

    result = CliRunner().invoke(cli, ["eval", str(checkpoint), "--split", "test"])
    assert result.exit_code != 0
    assert "test_fraction" in result.output


def test_no_test_split_writes_no_test_keys(checkpoint):
    summary = json.loads((checkpoint.parent / "summary.json").read_text())
    assert "test" not in summary and "test_epoch" not in summary


def test_train_cli_shows_test_beside_validation(faces, tmp_path):
    import yaml

    from hydranet.core.cli import cli

    spec = tiny_spec(faces, epochs=1)
    spec["data"]["test_fraction"] = 0.2
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(cli, ["train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "test metrics of epoch 1" in result.stdout
    assert "validation  test" in result.stdout


def test_a_resumed_run_scores_best_pt_on_the_test_split(faces, tmp_path, monkeypatch):
    """Stopped after epoch 1 and resumed: the run that finishes scores the test split; with no copy of the best
    weights in memory (its best epoch came before the resume) it reads them back from best.pt."""
    import os
    import signal

    import hydranet
    from hydranet.core import engine
    from hydranet.core.errors import TrainingInterrupted
    from hydranet.core.inference import TrainedModel

    real_evaluate = engine.evaluate

    def stop_after_epoch_one(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # finish the validation, save and stop
        return real_evaluate(*args, **kwargs)

    spec = tiny_spec(faces, epochs=2)
    spec["data"]["test_fraction"] = 0.2
    monkeypatch.setattr(engine, "evaluate", stop_after_epoch_one)
    with pytest.raises(TrainingInterrupted):
        hydranet.train(spec, out_dir=tmp_path / "run", progress=False, echo=False)
    monkeypatch.setattr(engine, "evaluate", real_evaluate)
    assert not (tmp_path / "run" / "summary.json").exists()
    monkeypatch.setattr(engine.Trainer, "_keep_best_weights", lambda self: None)
    result = hydranet.train(resume=tmp_path / "run", progress=False, echo=False)
    assert result.test is not None and json.loads((tmp_path / "run" / "summary.json").read_text())["test"] == result.test
    evaluation = TrainedModel.from_checkpoint(tmp_path / "run" / "best.pt").evaluate(split="test", details=False)
    for task, metrics in result.test.items():
        for metric, value in metrics.items():
            assert math.isclose(evaluation.result.metrics[task][metric], value, rel_tol=1e-6, abs_tol=1e-7)


def test_a_sweep_of_runs_with_a_test_split_writes_compare_test_csv(faces, tmp_path, components):
    import csv

    from hydranet.core.compare import COMPARE_CSV, COMPARE_TEST_CSV
    from hydranet.core.sweep import axes_from_mapping, plan_sweep, run_sweep

    spec = tiny_spec(faces, epochs=1)
    spec["data"]["test_fraction"] = 0.2
    plan = plan_sweep(spec, axes_from_mapping({"train.seed": [0, 1]}), out_dir=tmp_path / "sweep",
                      components=components)
    result = run_sweep(plan, components=components, progress=False, echo=False)
    assert (tmp_path / "sweep" / COMPARE_CSV).is_file() and result.test_csv == tmp_path / "sweep" / COMPARE_TEST_CSV
    rows = list(csv.DictReader((tmp_path / "sweep" / COMPARE_TEST_CSV).read_text().splitlines()))
    first = json.loads((plan.runs[0].path / "summary.json").read_text())["test"]
    assert float(rows[0]["age.mae.mean"]) == pytest.approx(
        (first["age"]["mae"] + json.loads((plan.runs[1].path / "summary.json").read_text())["test"]["age"]["mae"]) / 2)
