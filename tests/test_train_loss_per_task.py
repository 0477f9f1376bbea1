"""train_loss.<task> is the mean of the task's loss over the steps whose batch had a label for it.

A step whose batch has no label for a task adds that task a loss of 0 (the
masked mean of no rows); dividing the epoch's sum by every step understated a
sparsely labelled task's training loss many times over (a task labelled on one
image in nine steps read 0.69 / 9). Validation has always averaged over the
labelled images; training now averages over the labelled steps, in metrics.csv,
in the log line and in what the weighting's `epoch_end` gets (DWA's loss ratios).

The sparse task here is gender labelled only on the faces aged 80 or more
(6 of the 240 synthetic ones): a handful of the 11 training steps of an epoch
have one, the others none. It records, per training step, whether its batch had
a label and the loss it gave, so the expected means are computed exactly as the
step sums them (float32, in step order).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import hydranet
from conftest import tiny_spec
from hydranet.core import capture
from hydranet.core.engine import Trainer
from hydranet.core.errors import TrainingInterrupted
from hydranet.core.forward import DUMMY_ROWS
from hydranet.core.interfaces import label_mask
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.plugins.weighting.sum import Sum
from hydranet.tasks.kinds import BinaryParams, BinaryTask
from test_capture import EagerReplay
from test_edited_checkpoints import _set, edited, refused, resumable

#: the sparse task's training steps, in order: (whether the batch had a label, the task's loss)
STEPS: list[tuple[bool, torch.Tensor]] = []
#: the mean losses the weighting's epoch_end got, one list per epoch
EPOCH_ENDS: list[list[float]] = []


class SeniorGender(BinaryTask):
    """Gender, labelled on the faces of the `ages` only; records each training step's loss."""

    ages: range = range(80, 200)

    def parse_label(self, record):
        return super().parse_label(record) if int(record["age"]) in self.ages else None

    def loss(self, output, target):
        loss = super().loss(output, target)
        if torch.is_grad_enabled() and output.shape[0] != DUMMY_ROWS:  # a training step, not validation
            STEPS.append((bool(label_mask(target).any()), loss.detach().clone()))
        return loss


class RecordingSum(Sum):
    """The built-in sum, keeping what its epoch_end is given."""

    def epoch_end(self, mean_losses):
        EPOCH_ENDS.append(mean_losses.tolist())
        super().epoch_end(mean_losses)


class Plugin:
    @hydranet.hookimpl
    def register_tasks(self, register):
        register("senior_gender", SeniorGender, params=BinaryParams)

    @hydranet.hookimpl
    def register_weightings(self, register):
        register("recording_sum", RecordingSum)


@pytest.fixture
def components():
    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(Plugin(), "sparse-test", distribution="test", version="0", builtin=False)
    STEPS.clear()
    EPOCH_ENDS.clear()
    yield load_components(pm)
    SeniorGender.ages = range(80, 200)


STEPS_PER_EPOCH = 180 // 16  # 240 faces, a quarter for validation, batches of 16 (the ragged last one dropped)


def sparse_spec(faces: Path, components, epochs: int = 2, **train) -> Any:
    raw = tiny_spec(faces, epochs=epochs, batch_size=16, **train)
    raw["tasks"] = ["age", {"name": "senior", "kind": "senior_gender", "label": "gender"}]
    raw["weighting"] = "recording_sum"
    return load_spec(raw, components=components)


def rows(run: Path) -> list[dict[str, str]]:
    """metrics.csv as written, without the columns of seconds (which differ between any two runs)."""
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in csv.DictReader(handle)]


def labelled_step_means(steps: list[tuple[bool, torch.Tensor]], per_epoch: int) -> list[tuple[float, int]]:
    """Each epoch's (mean loss over its labelled steps, number of labelled steps), summed as the step sums."""
    means = []
    for start in range(0, len(steps), per_epoch):
        epoch = steps[start:start + per_epoch]
        total = torch.zeros(())
        for _, loss in epoch:
            total += loss  # the unlabelled steps' 0s too: exactly as the run's running sum
        count = sum(labelled for labelled, _ in epoch)
        means.append(((total / count).item() if count else math.nan, count))
    return means


def test_a_sparse_tasks_train_loss_is_its_mean_over_the_steps_with_a_label(faces, tmp_path, components):
    result = hydranet.train(sparse_spec(faces, components), out_dir=tmp_path / "run", components=components,
                            progress=False, echo=False)
    assert len(STEPS) == 2 * STEPS_PER_EPOCH
    expected = labelled_step_means(STEPS, STEPS_PER_EPOCH)
    assert all(0 < count < STEPS_PER_EPOCH for _, count in expected), expected  # some steps had a label, some none
    written = [float(row["train_loss.senior"]) for row in rows(result.run_dir)]
    assert written == pytest.approx([mean for mean, _ in expected], rel=1e-6)
    # what DWA and the like read: the same means (every step of the age task had a label)
    assert [senior for _, senior in EPOCH_ENDS] == pytest.approx([mean for mean, _ in expected], rel=1e-6)
    # of the order of its validation loss (a binary task's, about log 2), not a fraction of it
    assert all(0.3 < value < 2 for value in written), written
    log = (result.run_dir / "train.log").read_text()
    assert f"senior: loss {written[-1]:.3f} |" in log


def test_a_task_no_step_of_an_epoch_had_a_label_for_has_no_train_loss(faces, tmp_path, components):
    """Its metrics.csv cell and log line say nan, as val_loss does for a task without a validation label: there
    was no loss to average. The weighting gets 0 for it, what each of its steps' losses was (and what it got
    before), so a weighting never sees a NaN that no data caused."""
    SeniorGender.ages = range(88, 89)  # one face, which the split puts in validation
    result = hydranet.train(sparse_spec(faces, components), out_dir=tmp_path / "run", components=components,
                            progress=False, echo=False)
    assert STEPS and not any(labelled for labelled, _ in STEPS)
    written = rows(result.run_dir)
    assert [row["train_loss.senior"] for row in written] == ["nan", "nan"]
    assert all(float(row["val_loss.senior"]) > 0 for row in written)  # its one label, in validation
    assert [senior for _, senior in EPOCH_ENDS] == [0.0, 0.0]
    assert "senior: loss nan |" in (result.run_dir / "train.log").read_text()
    assert all(math.isnan(row["train_loss.senior"]) for row in result.history)


def test_the_recorded_step_counts_the_labelled_steps_as_the_plain_step(faces, tmp_path, components, monkeypatch):
    """The count is kept on the device and updated in place, so a recorded step (cuda_graphs: step; its
    stand-in here) replays it, and the warm-up steps before the recording are undone from it too."""
    spec = sparse_spec(faces, components)
    plain = hydranet.train(spec, out_dir=tmp_path / "plain", components=components, progress=False, echo=False)
    expected = labelled_step_means(STEPS, STEPS_PER_EPOCH)
    assert [float(row["train_loss.senior"]) for row in rows(plain.run_dir)] == pytest.approx(
        [mean for mean, _ in expected], rel=1e-6)
    backend = EagerReplay()
    monkeypatch.setattr(capture, "graph_backend", lambda device: backend)
    recorded = hydranet.train(spec, overrides=["train.cuda_graphs=step"], out_dir=tmp_path / "step",
                              components=components, progress=False, echo=False)
    assert "CUDA graph per step" in recorded.settings.describe() and backend.recorded == 1
    for got, want in zip(rows(recorded.run_dir), rows(plain.run_dir), strict=True):
        for task in ("age", "senior"):
            key = f"train_loss.{task}"
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5), key


def stopped_and_resumed(spec, components, tmp_path: Path, monkeypatch, epoch: int, step: int,
                        edit: Callable[[dict[str, Any]], None] = lambda progress: None) -> dict[str, Any]:
    """Stop the run after `step` steps of `epoch` (as Ctrl-C stops it) in tmp_path / 'cut', `edit` the progress its
    last.pt saved, and resume it to its end. Returns the progress saved at the stop."""
    original = Trainer._stop_requested
    monkeypatch.setattr(Trainer, "_stop_requested",
                        lambda self, done: self.progress_state.epoch == epoch and done == step or original(self, done))
    with pytest.raises(TrainingInterrupted):
        hydranet.train(spec, out_dir=tmp_path / "cut", components=components, progress=False, echo=False)
    monkeypatch.setattr(Trainer, "_stop_requested", original)
    last = tmp_path / "cut" / "last.pt"
    saved = torch.load(last, weights_only=True)
    progress = dict(saved["progress"])
    edit(saved["progress"])
    torch.save(saved, last)
    hydranet.train(components=components, resume=tmp_path / "cut", progress=False, echo=False)
    return progress


def test_a_run_resumed_mid_epoch_writes_the_metrics_of_the_uninterrupted_run(faces, tmp_path, components,
                                                                             monkeypatch):
    spec = sparse_spec(faces, components, deterministic=True)
    whole = hydranet.train(spec, out_dir=tmp_path / "whole", components=components, progress=False, echo=False)
    expected = labelled_step_means(STEPS, STEPS_PER_EPOCH)
    before_stop = sum(labelled for labelled, _ in STEPS[STEPS_PER_EPOCH:STEPS_PER_EPOCH + 5])
    progress = stopped_and_resumed(spec, components, tmp_path, monkeypatch, epoch=2, step=5)
    assert progress["labelled_steps"] == [5, before_stop]  # last.pt keeps the count beside the loss sums
    assert rows(tmp_path / "cut") == rows(whole.run_dir)
    written = [float(row["train_loss.senior"]) for row in rows(tmp_path / "cut")]
    assert written == pytest.approx([mean for mean, _ in expected], rel=1e-6)


def test_a_last_pt_from_before_the_labelled_steps_resumes_counting_every_step(faces, tmp_path, monkeypatch):
    """Where every batch has every label (the demo) that is the same mean, so the run resumes exactly."""
    components = load_components(make_plugin_manager(entry_points=False))
    spec = load_spec(tiny_spec(faces, epochs=2, batch_size=16, deterministic=True), components=components)
    whole = hydranet.train(spec, out_dir=tmp_path / "whole", components=components, progress=False, echo=False)
    progress = stopped_and_resumed(spec, components, tmp_path, monkeypatch, epoch=1, step=4,
                                   edit=lambda saved: saved.pop("labelled_steps"))  # as an older hydranet wrote it
    assert progress["labelled_steps"] == [4, 4, 4]
    assert rows(tmp_path / "cut") == rows(whole.run_dir)


def test_a_hand_edited_labelled_steps_is_named(checkpoint: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    last = edited(checkpoint.parent / "last.pt", run / "last.pt",
                  lambda d: (resumable(d), _set("progress", "labelled_steps", value=[1, -2, 3])(d)))
    refused(["train", "--resume", str(run), "--no-progress"], last,
            f"{last}: progress.labelled_steps is [1, -2, 3], not a list of 3 whole numbers of 0 or more")
