"""train.monitor picks the best epoch (the total validation loss, or a task's metric); train.patience stops early."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec
from hydranet.core import engine
from hydranet.core.checkpoint import atomic_torch_save, read_checkpoint
from hydranet.core.cli import cli
from hydranet.core.errors import SpecError, TrainingInterrupted
from hydranet.core.spec import load_spec

TASKS = ("age", "gender", "ethnicity")


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def first_best(run: Path, value, higher: bool) -> int:
    """The first epoch of metrics.csv with the best `value(row)`: a tie is no improvement."""
    table = [(value(row), int(row["epoch"])) for row in rows(run)]
    best = max(v for v, _ in table) if higher else min(v for v, _ in table)
    return next(epoch for v, epoch in table if v == best)


def train(raw: dict, out: Path, **kwargs):
    return hydranet.train(raw, out_dir=out, progress=False, echo=False, **kwargs)


def frozen_spec(faces, **train_keys) -> dict:
    """Every part frozen, only the uncertainty weighting's own parameters train: the validation metrics and losses
    are the same every epoch, so no epoch after the first improves on it."""
    raw = tiny_spec(faces, **train_keys)
    raw["weighting"], raw["freeze"] = "uncertainty", ["backbone", *TASKS]
    return raw


def test_the_default_monitor_is_the_total_validation_loss(faces, tmp_path):
    result = train(tiny_spec(faces, epochs=3), tmp_path / "run")
    total = lambda row: sum(float(row[f"val_loss.{task}"]) for task in TASKS)  # noqa: E731
    said = summary(tmp_path / "run")
    assert result.best_epoch == said["best_epoch"] == first_best(tmp_path / "run", total, higher=False)
    assert (said["monitor"], said["stopped_early"]) == ("loss", False)
    assert (result.monitor, result.stopped_early) == ("loss", False)
    assert yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())["train"]["patience"] is None


@pytest.mark.parametrize("monitor, higher, lr", [("gender.accuracy", True, 1e-2), ("age.mae", False, 3e-3)])
def test_a_metric_monitor_picks_its_best_epoch_in_its_own_direction(faces, tmp_path, monitor, higher, lr):
    run = tmp_path / "run"
    result = train(tiny_spec(faces, epochs=3, lr=lr, monitor=monitor), run)
    said = summary(run)
    task, metric = monitor.split(".")
    assert said["higher_is_better"][task][metric] is higher
    best = first_best(run, lambda row: float(row[f"val.{monitor}"]), higher)
    assert result.best_epoch == said["best_epoch"] == best
    assert said["monitor"] == monitor
    assert read_checkpoint(run / "best.pt")["epoch"] == best


def test_one_task_s_validation_loss_picks_the_best_epoch(faces, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_spec(faces, epochs=3, lr=1e-2, monitor="gender.loss"), run)
    best = first_best(run, lambda row: float(row["val_loss.gender"]), higher=False)
    assert result.best_epoch == summary(run)["best_epoch"] == best


@pytest.mark.parametrize("given, meant", [("val.gender.accuracy", "gender.accuracy"), ("val_loss.age", "age.loss")])
def test_a_monitor_spelt_as_a_metrics_csv_column_is_answered_with_the_name_to_give(faces, given, meant):
    with pytest.raises(SpecError) as caught:
        load_spec(tiny_spec(faces, monitor=given))
    assert (f"did you mean '{meant}'? (train.monitor names TASK.METRIC, without metrics.csv's column prefix)"
            in str(caught.value))


def test_a_misspelt_monitor_is_a_spec_problem_with_a_did_you_mean(faces, tmp_path):
    with pytest.raises(SpecError) as caught:  # the task: at spec load
        load_spec(tiny_spec(faces, monitor="agee.mae"))
    assert "train.monitor: 'agee' is not a task of this spec; did you mean 'age.mae'?" in str(caught.value)
    with pytest.raises(SpecError) as caught:  # the metric: once the tasks are built, before the run starts
        train(tiny_spec(faces, monitor="age.mea"), tmp_path / "run")
    assert "train.monitor: task 'age' has no validation metric 'mea'; did you mean 'age.mae'?" in str(caught.value)
    assert not (tmp_path / "run").exists()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(faces, monitor="val_loss")))
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "cli"),
                                      "--no-progress"])
    assert result.exit_code == 1 and "train.monitor: should be 'loss' (the total validation loss) or TASK.METRIC" \
        in result.output, result.output


def test_patience_stops_early_says_so_and_the_run_is_finished(faces, tmp_path):
    run = tmp_path / "run"
    result = train(frozen_spec(faces, epochs=4, monitor="gender.accuracy", patience=1), run)
    assert [row["epoch"] for row in rows(run)] == ["1", "2"]
    said = summary(run)
    assert (said["stopped_early"], said["monitor"], said["best_epoch"]) == (True, "gender.accuracy", 1)
    assert result.stopped_early and "stopped_early=True" in repr(result)
    accuracy = float(rows(run)[0]["val.gender.accuracy"])
    assert (f"stopped early after epoch 2 of 4: the validation gender.accuracy did not improve for 1 epoch in a "
            f"row (train.patience 1); the best epoch is 1 (gender.accuracy {accuracy:.4g}), whose weights best.pt "
            "holds") in (run / "train.log").read_text()
    log = (run / "train.log").read_text()
    outcome = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert outcome.exit_code == 1, outcome.output
    assert f"nothing left to train: the run in {run} stopped early after epoch 2 of 4" in outcome.output
    assert (run / "train.log").read_text() == log  # refused before anything was loaded or written


def test_a_run_killed_before_its_early_stops_summary_completes_without_training(faces, tmp_path):
    run = tmp_path / "run"
    train(frozen_spec(faces, epochs=4, patience=1), run)  # the default monitor: the loss is the same every epoch
    written = summary(run)
    (run / "summary.json").unlink()
    hydranet.train(resume=run, progress=False, echo=False)
    assert [row["epoch"] for row in rows(run)] == ["1", "2"]
    assert summary(run)["stopped_early"] is True and summary(run)["best_epoch"] == written["best_epoch"] == 1
    assert "completing it (nothing is trained)" in (run / "train.log").read_text()


def interrupted_after_validation(monkeypatch, epoch: int):
    """Ctrl-C during epoch `epoch`'s validation: the run saves that epoch and stops."""
    real_evaluate, calls = engine.evaluate, []

    def ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            os.kill(os.getpid(), signal.SIGINT)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", ctrl_c)


def without_seconds(run: Path) -> list[dict[str, str]]:
    return [{key: value for key, value in row.items() if not key.endswith("seconds")} for row in rows(run)]


def test_a_resumed_run_keeps_counting_epochs_without_improvement(faces, tmp_path, monkeypatch):
    """Patience 2: epoch 1 is the best, epochs 2 and 3 are not, so the run stops after epoch 3. Stopped after
    epoch 2 and resumed, it must stop there too (a count started again would train epoch 4)."""
    raw = frozen_spec(faces, epochs=4, monitor="gender.accuracy", patience=2)
    train(raw, tmp_path / "whole")
    assert summary(tmp_path / "whole")["stopped_early"] is True
    interrupted_after_validation(monkeypatch, epoch=2)
    with pytest.raises(TrainingInterrupted):
        train(raw, tmp_path / "cut")
    progress = read_checkpoint(tmp_path / "cut" / "last.pt")["progress"]
    assert (progress["epoch"], progress["epochs_without_improvement"], progress["stopped_early"]) == (3, 1, False)
    monkeypatch.undo()
    result = hydranet.train(resume=tmp_path / "cut", progress=False, echo=False)
    assert result.stopped_early
    assert without_seconds(tmp_path / "cut") == without_seconds(tmp_path / "whole")
    for key in ("best_epoch", "stopped_early", "monitor"):
        assert summary(tmp_path / "cut")[key] == summary(tmp_path / "whole")[key]


def test_an_older_last_pt_without_the_monitor_fields_resumes_as_before(faces, tmp_path, monkeypatch):
    """A last.pt written before train.monitor: its best_loss is the best value, its spec has no monitor."""
    raw = tiny_spec(faces, epochs=3)
    train(raw, tmp_path / "whole")
    interrupted_after_validation(monkeypatch, epoch=2)
    with pytest.raises(TrainingInterrupted):
        train(raw, tmp_path / "cut")
    monkeypatch.undo()
    saved = read_checkpoint(tmp_path / "cut" / "last.pt")
    for key in ("best_value", "epochs_without_improvement", "stopped_early"):
        del saved["progress"][key]
    for key in ("monitor", "patience"):
        del saved["spec"]["train"][key]
    atomic_torch_save(saved, tmp_path / "cut" / "last.pt")
    hydranet.train(resume=tmp_path / "cut", progress=False, echo=False)
    assert without_seconds(tmp_path / "cut") == without_seconds(tmp_path / "whole")
    assert summary(tmp_path / "cut")["best_epoch"] == summary(tmp_path / "whole")["best_epoch"]


def test_a_finished_early_run_is_counted_done_by_a_sweep_rerun(faces, tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(frozen_spec(faces, epochs=4, patience=1)))
    args = ["train", str(tmp_path / "spec.yaml"), "--sweep", "train.lr=1e-3", "--out", str(tmp_path / "sweep"),
            "--no-progress"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "finished already in" in again.output and "skipped" in again.output, again.output


def test_a_misspelt_metric_is_a_spec_problem_blamed_on_its_set_before_any_run_of_a_sweep_starts(tmp_path):
    """It was found only as each run started, so a sweep's first runs trained before its typo was seen."""
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    out = tmp_path / "w"
    result = CliRunner().invoke(cli, ["train", "demo", "--set", "train.monitor=age.mea", "--sweep", "train.seed=0,1",
                                      "--out", str(out), "--no-progress"])
    assert result.exit_code != 0 and "none was started" in result.output
    assert ("train.monitor (from --set train.monitor=age.mea): task 'age' has no validation metric 'mea'; did you "
            "mean 'age.mae'?") in result.output
    assert not out.exists() or not any(out.iterdir())


def test_the_closing_table_of_a_run_stopped_early_says_so(faces, tmp_path):

    spec = tmp_path / "early.yaml"
    spec.write_text(yaml.safe_dump(frozen_spec(faces, epochs=4, monitor="gender.accuracy", patience=1)))
    result = CliRunner().invoke(cli, ["train", str(spec), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert ("validation metrics of epoch 1, the best (best.pt; the last, epoch 2, is in last.pt and metrics.csv), the "
            "run having stopped early after epoch 2 (train.patience); baseline") in result.output
