"""What a finished or failed run leaves to read: the best epoch's metrics, and why a run stopped.

A run's best.pt holds its best epoch, the one `hydranet eval` and `compare`
report; the run's result and summary.json must give those metrics too, not
only the last epoch's. A run that fails after it was set up keeps its folder
(its earlier epochs may be saved), so its train.log must say why it stopped,
with the traceback when the error was not one hydranet worded.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import hydranet
from hydranet.core.weighting import WeightedSum
from conftest import tiny_spec, train_from_the_cli, with_weighting
from hydranet.core.run_result import metrics_at
from hydranet.core.errors import TrainingError
from hydranet.core.run import read_metrics
from hydranet.core.spec import load_spec


class AscentAfterFirstEpoch(WeightedSum):
    """Descends in epoch 1, then climbs the loss (multipliers -1): a later epoch is worse than the first."""

    def __init__(self, tasks):
        super().__init__(tasks)
        self.register_buffer("sign", torch.ones(()))

    def multipliers(self):
        return self.sign * torch.ones(self.num_tasks, device=self.sign.device)

    def epoch_end(self, losses):
        self.sign.fill_(-1.0)


def train(faces, tmp_path, strategy, **train_settings):
    components = with_weighting("probe", strategy, plugin="w-plugin")
    spec = load_spec({**tiny_spec(faces, **train_settings), "weighting": "probe"}, components=components)
    return hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)


def assert_metrics(got, expected):
    assert got.keys() == expected.keys()
    for task, metrics in expected.items():
        assert got[task] == pytest.approx(metrics, rel=1e-7), task


def test_the_result_and_summary_give_the_best_epochs_metrics_beside_the_last(faces, tmp_path):
    result = train(faces, tmp_path, AscentAfterFirstEpoch, epochs=3, optimizer="adamw", lr=0.01)
    assert result.best_epoch == 1  # the climbing epochs validate worse
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    first, last = rows[0], rows[-1]
    expected_best = {task: {metric: first[f"val.{task}.{metric}"] for metric in metrics}
                     for task, metrics in result.final.metrics.items()}
    assert_metrics(result.best, expected_best)  # metrics.csv keeps 9 significant digits
    assert result.final.metrics["age"]["mae"] == pytest.approx(last["val.age.mae"])
    assert result.best["age"]["mae"] != pytest.approx(result.final.metrics["age"]["mae"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_epoch"] == 1
    assert_metrics(summary["best"], expected_best)
    assert summary["final"]["age"]["mae"] == pytest.approx(last["val.age.mae"])


def test_metrics_at_reads_an_epochs_row_as_metrics_csv_gives_it():
    rows = [{"epoch": 1.0, "val.age.mae": 9.5, "val.gender.accuracy": 0.5},
            {"epoch": 2.0, "val.age.mae": 8.0, "val.gender.accuracy": 0.75}]
    like = {"age": {"mae": 0.0}, "gender": {"accuracy": 0.0}}
    assert metrics_at(rows, 2, like) == {"age": {"mae": 8.0}, "gender": {"accuracy": 0.75}}
    assert metrics_at(rows, 0, like) is None  # no epoch had a finite loss: no best.pt
    edited = [{"epoch": "1", "val.age.mae": ""}]  # a row the user emptied and a column removed
    found = metrics_at(edited, 1, like)
    assert math.isnan(found["age"]["mae"]) and math.isnan(found["gender"]["accuracy"])


class FailingEpochEnd(WeightedSum):
    def multipliers(self):
        return torch.ones(self.num_tasks)

    def epoch_end(self, losses):
        raise ValueError("history buffer not initialised")


def test_a_weighting_whose_epoch_end_raises_is_named_and_train_log_says_why_the_run_stopped(faces, tmp_path):
    with pytest.raises(TrainingError) as caught:
        train(faces, tmp_path, FailingEpochEnd, epochs=1)
    message = str(caught.value)
    assert message.startswith("the epoch_end of weighting 'probe' from plugin 'w-plugin'")
    assert "raised ValueError: history buffer not initialised" in message and "Fix the weighting's epoch_end" in message
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"error: the run stopped (no checkpoint written): {message}" in log
    assert "Traceback" not in log  # a worded error is enough


class FailingStateDict(WeightedSum):
    """A bug hydranet does not check for: state_dict raises when the epoch's checkpoint is saved."""

    def multipliers(self):
        return torch.ones(self.num_tasks)

    def state_dict(self, *args, **kwargs):
        raise KeyError("not_a_buffer")


def test_an_unexpected_error_after_setup_leaves_its_traceback_in_train_log(faces, tmp_path):
    with pytest.raises(KeyError):
        train(faces, tmp_path, FailingStateDict, epochs=1)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "error: the run stopped (no checkpoint written): KeyError: 'not_a_buffer'" in log
    assert "Traceback (most recent call last)" in log and "in state_dict" in log
    assert log.rstrip().endswith("KeyError: 'not_a_buffer'")


def test_train_reports_the_best_epoch_and_says_which_when_it_is_not_the_last():
    from hydranet.core.report import final_report

    best, last = {"age": {"mae": 6.0}}, {"age": {"mae": 7.5}}
    heading, shown = final_report(4.0, 3, best, last)  # metrics.csv's epoch is a float
    assert shown is best
    assert heading == ("validation metrics of epoch 3, the best (best.pt; the last, epoch 4, is in last.pt and "
                       "metrics.csv)")
    heading, shown = final_report(4, 4, last, last)
    assert shown is last and heading == "validation metrics after epoch 4 (the best epoch: best.pt)"
    heading, shown = final_report(4, 0, None, last)
    assert shown is last and "no epoch's validation loss was finite: no best.pt" in heading
    heading, _ = final_report(4, 4, last, last, validated=False)
    assert heading == "training-set metrics (no validation split) after epoch 4 (the best epoch: best.pt)"


def test_the_train_command_prints_the_best_epochs_table(faces, tmp_path, monkeypatch):
    components = with_weighting("probe", AscentAfterFirstEpoch, plugin="w-plugin")
    raw = {**tiny_spec(faces, epochs=3, optimizer="adamw", lr=0.01), "weighting": "probe"}
    result = train_from_the_cli(raw, components, tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    first = read_metrics(tmp_path / "run" / "metrics.csv")[0]
    assert "validation metrics of epoch 1, the best (best.pt; the last, epoch 3," in result.output
    age_row = next(line for line in result.output.splitlines() if line.startswith("age "))
    assert f"{first['val.age.mae']:.4f}" in age_row


def test_a_run_without_a_validation_split_says_its_metrics_are_the_training_sets(faces, tmp_path, monkeypatch):
    """val_fraction 0 measures every epoch on the training images: the closing table was headed "validation
    metrics", and eval's default split (val) then pointed to --split all, never to the split the run used."""
    from click.testing import CliRunner
    from hydranet.core.cli import cli

    raw = tiny_spec(faces, epochs=1)
    raw["data"]["val_fraction"] = 0
    result = train_from_the_cli(raw, hydranet.components(), tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "\ntraining-set metrics (no validation split) after epoch 1 (the best epoch: best.pt)" in result.output
    assert "validation metrics" not in result.output
    evaluated = CliRunner().invoke(cli, ["eval", str(tmp_path / "run" / "best.pt")])
    assert evaluated.exit_code == 1
    assert ("the 'val' split of this data is empty, so the run measured its metrics on the training images; "
            "evaluate on split 'train' (--split train), as it did") in evaluated.output


def test_compare_says_a_run_failed_and_why_instead_of_still_in_its_first_epoch(faces, tmp_path):
    from hydranet.core.compare import RunProblem, read_run

    with pytest.raises(TrainingError) as caught:
        train(faces, tmp_path, FailingEpochEnd, epochs=1)
    with pytest.raises(RunProblem) as problem:
        read_run(tmp_path / "run")
    assert str(problem.value) == (f"{tmp_path / 'run'} has no finished epoch yet (no metrics in metrics.csv): it "
                                  f"failed ({caught.value}); fix that and train it again")


def test_an_empty_out_is_refused_not_read_as_the_current_folder(faces, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["train", "--out", "", "--set", f"data.root={faces}"])
    assert result.exit_code == 1 and not any(tmp_path.iterdir())
    assert "--out is empty; name the run folder to write, or give no --out for runs/<spec>-<time>" in result.output
    with pytest.raises(hydranet.HydranetError, match="^out_dir is empty;"):
        hydranet.train(tiny_spec(faces), out_dir=" ", progress=False, echo=False)


def test_a_train_log_that_cannot_take_the_failure_line_leaves_the_runs_own_error(faces, tmp_path, monkeypatch):
    from hydranet.core.run import FAILURE_LINE, RunFolder

    write = RunFolder.log

    def full_disk(self, line, *args, **kwargs):
        if line.startswith(FAILURE_LINE):
            raise OSError(28, "No space left on device")
        return write(self, line, *args, **kwargs)

    monkeypatch.setattr(RunFolder, "log", full_disk)
    with pytest.raises(TrainingError, match="the epoch_end of weighting 'probe'"):  # not the OSError
        train(faces, tmp_path, FailingEpochEnd, epochs=1)
