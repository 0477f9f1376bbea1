"""It never loses work: resume after SIGKILL or SIGINT, atomic checkpoints, non-finite skipping, broken heads."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from click.testing import CliRunner

import hydranet
from conftest import tiny_spec, with_task_kind
from hydranet.core import engine, interrupts
from hydranet.core.cli import cli
from hydranet.core.checkpoint import atomic_torch_save, read_checkpoint
from hydranet.core.errors import TrainingError, TrainingInterrupted
from hydranet.core.forward import DUMMY_ROWS
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.tasks.kinds import BinaryParams, BinaryTask, RegressionParams, RegressionTask

EPOCHS = 12


def slow_spec(faces) -> dict:
    """Many small steps, so a kill lands inside an epoch; deterministic algorithms."""
    return tiny_spec(faces, epochs=EPOCHS, batch_size=8, deterministic=True, log_every=1)


def hydranet_cli(*args: str, env=None) -> subprocess.Popen:
    environment = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "hydranet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=environment)


def finished(process: subprocess.Popen, timeout: float = 240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def model_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def metric_rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("seconds")}
            for row in csv.DictReader(open(run_dir / "metrics.csv"))]


def wait_for_epoch(run_dir: Path, epoch: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if read_checkpoint(run_dir / "last.pt")["epoch"] >= epoch:
                return
        except Exception:
            pass
        time.sleep(0.02)
    raise AssertionError(f"epoch {epoch} never finished")


@pytest.fixture(scope="module")
def reference(faces, tmp_path_factory):
    """An uninterrupted run of the same spec, in its own process."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "spec.yaml").write_text(yaml.safe_dump(slow_spec(faces)))
    finished(hydranet_cli("train", str(folder / "spec.yaml"), "--out", str(folder / "run"), "--no-progress"))
    return folder / "spec.yaml", folder / "run"


def assert_same_run(run_dir: Path, reference_dir: Path) -> None:
    expected, got = model_state(reference_dir), model_state(run_dir)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), f"{key} differs after resuming"
    assert metric_rows(run_dir) == metric_rows(reference_dir)




def test_resume_after_sigkill_gives_the_uninterrupted_weights(reference, tmp_path):
    spec_file, reference_dir = reference
    run_dir = tmp_path / "run"
    process = hydranet_cli("train", str(spec_file), "--out", str(run_dir), "--no-progress")
    wait_for_epoch(run_dir, 2, process)
    time.sleep(0.05)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = read_checkpoint(run_dir / "last.pt")["epoch"]
    assert 2 <= killed_at < EPOCHS
    output = finished(hydranet_cli("train", "--resume", str(run_dir), "--no-progress"))
    assert f"resumed from {run_dir / 'last.pt'}" in output
    assert_same_run(run_dir, reference_dir)


def test_sigint_saves_mid_epoch_says_so_once_and_resume_completes_exactly(reference, tmp_path):
    spec_file, reference_dir = reference
    run_dir = tmp_path / "run"
    process = hydranet_cli("train", str(spec_file), "--out", str(run_dir), "--no-progress")
    wait_for_epoch(run_dir, 1, process)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT, output
    assert output.count(f"Continue with: hydranet train --resume {run_dir}") == 1, output  # not echoed again
    assert (run_dir / "train.log").read_text().count("stopped by SIGINT") == 1
    progress = read_checkpoint(run_dir / "last.pt")["progress"]
    assert progress["epoch"] >= 2
    finished(hydranet_cli("train", "--resume", str(run_dir), "--no-progress"))
    assert_same_run(run_dir, reference_dir)


class SignalAfter(RegressionTask):
    """Sends `signum` to its own process from inside its `at`-th loss call (a training step or a validation batch);
    its loss is NaN in the calls numbered in `nan_at`."""

    calls = 0
    at = 10
    signum = signal.SIGTERM
    nan_at: frozenset[int] = frozenset()

    def per_sample_loss(self, output, target):
        if output.shape[0] == DUMMY_ROWS:  # check_heads' dummy pass before training: neither a step nor a batch
            return super().per_sample_loss(output, target)
        SignalAfter.calls += 1
        if SignalAfter.calls == SignalAfter.at:
            os.kill(os.getpid(), SignalAfter.signum)
        loss = super().per_sample_loss(output, target)
        return loss * float("nan") if SignalAfter.calls in SignalAfter.nan_at else loss


def signalled_run(faces, tmp_path, *, epochs: int, at: int, signum: int = signal.SIGTERM, weighting: str = "sum",
                  nan_at: frozenset[int] = frozenset()):
    """A run whose 'age' task signals its process at its `at`-th loss call, stopped there (tmp_path / 'cut'),
    and the same run uninterrupted (tmp_path / 'whole'). With batch_size 16, epoch 1 makes 11 training calls,
    then 2 validation calls. A `nan_at` makes those calls' losses NaN and the run skip them (on_nonfinite: skip).
    Returns the components, the TrainingInterrupted raised and the saved progress."""
    components = with_task_kind("signal_age", SignalAfter, RegressionParams, plugin="signaller")
    raw = tiny_spec(faces, epochs=epochs, batch_size=16, on_nonfinite="skip" if nan_at else "stop")
    raw["tasks"] = [{"name": "age", "kind": "signal_age", "label": "age"}, "gender"]
    raw["weighting"] = weighting
    spec = load_spec(raw, components=components)
    SignalAfter.calls, SignalAfter.at, SignalAfter.signum, SignalAfter.nan_at = 0, 10**9, signum, nan_at
    hydranet.train(spec, out_dir=tmp_path / "whole", components=components, progress=False, echo=False)
    SignalAfter.calls, SignalAfter.at = 0, at
    try:
        with pytest.raises(TrainingInterrupted) as caught:
            hydranet.train(spec, out_dir=tmp_path / "cut", components=components, progress=False, echo=False)
    finally:
        SignalAfter.at = 10**9
    return components, caught.value, read_checkpoint(tmp_path / "cut" / "last.pt")["progress"]


def resume_matches_the_whole_run(components, tmp_path) -> None:
    hydranet.train(components=components, resume=tmp_path / "cut", progress=False, echo=False)
    assert_same_run(tmp_path / "cut", tmp_path / "whole")


def test_sigterm_in_process_finishes_the_step_and_resumes_exactly(faces, tmp_path):
    components, stopped, progress = signalled_run(faces, tmp_path, epochs=3, at=14)  # epoch 2, step 1
    assert stopped.signum == signal.SIGTERM and "SIGTERM" in str(stopped)
    # from Python, the way on is said in Python (the CLI's command line is tested above)
    assert str(stopped).endswith(f'Continue with: hydranet.train(resume="{tmp_path / "cut"}")'), str(stopped)
    assert "hydranet train --resume" not in str(stopped)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    assert (progress["epoch"], progress["step"]) == (2, 1)
    resume_matches_the_whole_run(components, tmp_path)


def test_a_resumed_epoch_logs_the_mean_weights_of_all_its_steps(faces, tmp_path):
    """Learned weights move every step: the epoch's weight.<task> averages the steps before and after the stop."""
    components, _, progress = signalled_run(faces, tmp_path, epochs=2, at=14, weighting="uncertainty")
    assert len(progress["weight_sums"]) == 2 and progress["weight_sums"] != [3.0, 3.0]  # 3 steps, weights moved
    resume_matches_the_whole_run(components, tmp_path)  # metrics.csv, weight.* columns included, equal


def test_a_resumed_epoch_averages_its_losses_over_the_steps_trained_before_and_after_the_stop(faces, tmp_path):
    """Steps skipped before the stop are not counted as trained after it (the mean divided by too many steps)."""
    components, _, progress = signalled_run(faces, tmp_path, epochs=1, at=5, nan_at=frozenset({2, 9}))
    assert (progress["epoch"], progress["step"], progress["skipped"]) == (1, 5, 1)
    try:
        resume_matches_the_whole_run(components, tmp_path)  # metrics.csv's train_loss.* included
    finally:
        SignalAfter.nan_at = frozenset()
    assert "epoch 1: skipped 2 steps with a non-finite loss (1 in this run)" in (tmp_path / "cut" / "train.log").read_text()


def test_a_run_stopped_after_an_epochs_last_step_resumes_exactly(faces, tmp_path):
    """The resumed epoch has no batch left: it validates, saves and goes on (it used to report no step trained)."""
    components, _, progress = signalled_run(faces, tmp_path, epochs=2, at=11)  # epoch 1's last step
    assert (progress["epoch"], progress["step"]) == (1, 11)
    resume_matches_the_whole_run(components, tmp_path)


def test_a_checkpoint_from_a_gpu_resumes_on_the_cpu_and_the_log_says_the_draws_differ(faces, tmp_path):
    """A GPU run's generator states (16 bytes) do not fit the CPU's (5056): reseeded, said in train.log, run done."""
    components, _, progress = signalled_run(faces, tmp_path, epochs=2, at=14)  # epoch 2, step 3
    saved = read_checkpoint(tmp_path / "cut" / "last.pt")
    cuda_state = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    saved["progress"]["generators"] = {**saved["progress"]["generators"], "augment": cuda_state,
                                       "cuda:0": cuda_state}
    atomic_torch_save(saved, tmp_path / "cut" / "last.pt")
    hydranet.train(components=components, resume=tmp_path / "cut", progress=False, echo=False)
    log = (tmp_path / "cut" / "train.log").read_text()
    assert log.count(f"resumed at epoch 2, step {progress['step']} with random generators reseeded") == 1, log
    assert "differ from an uninterrupted run's" in log
    assert [row["epoch"] for row in metric_rows(tmp_path / "cut")] == ["1", "2"]


def test_sigint_during_validation_stops_after_it_without_another_step(faces, tmp_path):
    components, stopped, progress = signalled_run(faces, tmp_path, epochs=2, at=12, signum=signal.SIGINT)
    assert SignalAfter.calls == 13  # epoch 1's 11 steps and 2 validation batches, and no step of epoch 2
    assert (progress["epoch"], progress["step"]) == (2, 0)
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    assert stopped.signum == signal.SIGINT
    assert str(stopped).startswith("stopped by SIGINT after epoch 1 and its validation; progress saved in ")
    log = (tmp_path / "cut" / "train.log").read_text()
    assert "SIGINT received: finishing this epoch's validation, then saving and stopping" in log
    resume_matches_the_whole_run(components, tmp_path)


@pytest.mark.parametrize("validation", [1, 2])
def test_a_second_ctrl_c_stops_at_once_says_what_was_kept_and_exits_130(faces, tmp_path, monkeypatch, validation):
    """Ctrl-C twice during an epoch's validation (the first before a checkpoint exists, the second after one)."""
    real_evaluate, calls = engine.evaluate, []

    def ctrl_c_twice(*args, **kwargs):
        calls.append(1)
        if len(calls) == validation:
            os.kill(os.getpid(), signal.SIGINT)  # finish, save and stop...
            os.kill(os.getpid(), signal.SIGINT)  # ...no: stop now
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", ctrl_c_twice)
    monkeypatch.setattr(interrupts, "DOUBLE_SIGNAL_SECONDS", 0.0)  # the second press comes "a moment later"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(faces, epochs=3)))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "spec.yaml"), "--out", str(run_dir), "--no-progress"])
    assert result.exit_code == 128 + signal.SIGINT, result.output
    assert "Aborted" not in result.output
    said = f"stopped at once by a second Ctrl-C during epoch {validation}'s validation, without saving its progress."
    assert result.output.count(said) == 1 and (run_dir / "train.log").read_text().count(said) == 1
    if validation == 1:
        assert "No checkpoint had been written yet, so there is nothing to resume" in result.output
        assert not (run_dir / "last.pt").exists()
    else:
        assert (f"Kept: {run_dir / 'last.pt'}, saved at the end of epoch 1. "
                f"Continue from there with: hydranet train --resume {run_dir}") in result.output
        assert read_checkpoint(run_dir / "last.pt")["progress"]["epoch"] == 2


def test_resume_of_a_finished_run_says_so(faces, tmp_path, components):
    spec = load_spec(tiny_spec(faces, epochs=1), components=components)
    hydranet.train(spec, out_dir=tmp_path, components=components, progress=False, echo=False)
    log = (tmp_path / "train.log").read_text()
    with pytest.raises(TrainingError) as caught:
        hydranet.train(components=components, resume=tmp_path, progress=False, echo=False)
    assert str(caught.value) == (  # the same last.pt as the other refusals of --resume suggest, and best.pt
        f"nothing left to train: the run in {tmp_path} already finished its 1 epoch; to train it further, start a "
        f"new run from its last weights with init_from: {tmp_path / 'last.pt'} (or from its best epoch's, "
        f"{tmp_path / 'best.pt'})")
    assert (tmp_path / "train.log").read_text() == log  # refused before loading data or writing anything
    with pytest.raises(hydranet.HydranetError, match="nothing to resume: .*nope does not exist"):
        hydranet.train(components=components, resume=tmp_path / "nope", progress=False, echo=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(hydranet.HydranetError, match="nothing to resume in .*empty: last.pt not found"):
        hydranet.train(components=components, resume=tmp_path / "empty", progress=False, echo=False)


def test_resume_takes_the_run_folder_not_another_checkpoint_file(faces, tmp_path, components):
    """best.pt or a loose copy given to resume is refused (it rewound and overwrote the run); RUN/last.pt is RUN."""
    run = tmp_path / "run"
    hydranet.train(load_spec(tiny_spec(faces, epochs=1), components=components), out_dir=run,
                   components=components, progress=False, echo=False)
    before = {name: (run / name).read_bytes() for name in ("train.log", "metrics.csv", "last.pt")}
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "ck.pt").write_bytes((run / "best.pt").read_bytes())
    with pytest.raises(hydranet.HydranetError) as caught:
        hydranet.train(components=components, resume=run / "best.pt", progress=False, echo=False)
    assert str(caught.value) == (f"resume takes a run folder (it continues from the folder's last.pt and writes "
                                 f"there), not the checkpoint file {run / 'best.pt'}. To continue the run in {run}, "
                                 f"pass that folder. To start a new run from that checkpoint's weights, put "
                                 f"init_from: {run / 'best.pt'} in a spec.")
    result = CliRunner().invoke(cli, ["train", "--resume", str(loose / "ck.pt"), "--no-progress"])
    assert result.exit_code == 1 and "not the checkpoint file" in result.output
    assert "pass that folder" not in result.output and f"init_from: {loose / 'ck.pt'}" in result.output
    assert [p.name for p in loose.iterdir()] == ["ck.pt"]  # no run files written beside the copy
    with pytest.raises(TrainingError, match=f"nothing left to train: the run in {run} already finished"):
        hydranet.train(components=components, resume=run / "last.pt", progress=False, echo=False)
    assert {name: (run / name).read_bytes() for name in before} == before


def test_resume_from_another_folder_says_where_a_relative_data_root_counts_from(faces, tmp_path, monkeypatch):
    """The message said "--set data.root=DIR", which a resumed run refuses."""
    real_evaluate = engine.evaluate

    def stop_after_epoch_one(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # finish the validation, save and stop
        return real_evaluate(*args, **kwargs)

    start, elsewhere = tmp_path / "start", tmp_path / "else" / "where"  # a relative root finds nothing there
    start.mkdir(), elsewhere.mkdir(parents=True)
    monkeypatch.chdir(start)
    components = load_components(make_plugin_manager(entry_points=False))
    spec = load_spec(tiny_spec(Path(os.path.relpath(faces, start)), epochs=2), components=components)
    monkeypatch.setattr(engine, "evaluate", stop_after_epoch_one)
    with pytest.raises(TrainingInterrupted):
        hydranet.train(spec, out_dir="run", components=components, progress=False, echo=False)
    monkeypatch.setattr(engine, "evaluate", real_evaluate)
    assert read_checkpoint(start / "run" / "last.pt")["started_in"] == str(start)
    monkeypatch.chdir(elsewhere)
    with pytest.raises(hydranet.HydranetError) as caught:
        hydranet.train(resume=start / "run", components=components, progress=False, echo=False)
    assert str(caught.value) == (
        f"UTKFace folder {os.path.relpath(faces, start)} does not exist in {elsewhere}; a resumed run keeps the "
        f"spec it started with (--set cannot change it), and its relative paths count from the folder the run "
        f"started in, {start}: resume from there (cd {start} && hydranet train --resume {start / 'run'}), or start "
        f"a new run from its weights with init_from: {start / 'run' / 'last.pt'} and another data.root")
    # the folder keeps its last.pt, and its train.log says so, not "no checkpoint written"
    assert f"error: the run stopped (last.pt saved at the end of epoch 1): {caught.value}" in (
        start / "run" / "train.log").read_text()
    monkeypatch.chdir(start)
    result = hydranet.train(resume="run", components=components, progress=False, echo=False)
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_resume_refuses_overrides_from_python_as_the_cli_does(faces, tmp_path, components):
    """A resumed run takes its spec from the checkpoint: overrides would be ignored, so both APIs refuse them."""
    spec = load_spec(tiny_spec(faces, epochs=2), components=components)
    hydranet.train(spec, out_dir=tmp_path, components=components, progress=False, echo=False)
    before = (tmp_path / "train.log").read_text()
    expected = ("continues a run exactly as it was saved (its spec, settings and run folder); give no {} with it. "
                f"To train with other settings, start a new run from its weights with init_from: {tmp_path / 'last.pt'}")
    with pytest.raises(hydranet.HydranetError) as caught:
        hydranet.train(resume=tmp_path, overrides=["train.epochs=5"], components=components, progress=False,
                       echo=False)
    assert str(caught.value) == "resume " + expected.format("overrides")
    with pytest.raises(hydranet.HydranetError, match="give no spec or out_dir with it"):
        hydranet.train("demo", out_dir=tmp_path / "x", resume=tmp_path, components=components, progress=False,
                       echo=False)
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path), "--set", "train.epochs=5"])
    assert result.exit_code == 2 and "--resume " + expected.format("--set") in " ".join(result.output.split())
    assert (tmp_path / "train.log").read_text() == before  # nothing ran


class AlwaysNaN(RegressionTask):
    def per_sample_loss(self, output, target):
        return super().per_sample_loss(output, target) * float("nan")


def test_non_finite_losses_of_several_tasks_are_named_in_one_english_list(faces, tmp_path):
    components = with_task_kind("nan_age", AlwaysNaN, RegressionParams, plugin="nan")
    raw = tiny_spec(faces, epochs=1)
    raw["tasks"] = [{"name": name, "kind": "nan_age", "label": "age"} for name in ("age", "ethnicity", "gender")]
    with pytest.raises(TrainingError) as caught:
        hydranet.train(load_spec(raw, components=components), out_dir=tmp_path, components=components,
                       progress=False, echo=False)
    message = str(caught.value)
    assert message.startswith("non-finite loss for tasks 'age', 'ethnicity' and 'gender' at epoch 1, step 1.")
    assert "check those tasks' labels" in message


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_torch_save({"format": "hydranet-checkpoint", "value": torch.arange(3)}, target)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_torch_save({"value": torch.arange(5)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["value"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


class SometimesNaN(RegressionTask):
    """A NaN loss on every fifth training call."""

    calls = 0

    def per_sample_loss(self, output, target):
        SometimesNaN.calls += 1
        loss = super().per_sample_loss(output, target)
        return loss * float("nan") if SometimesNaN.calls % 5 == 0 else loss


def test_skip_mode_skips_non_finite_batches_and_counts_them(faces, tmp_path):
    components = with_task_kind("flaky_age", SometimesNaN, RegressionParams, plugin="flaky")
    raw = tiny_spec(faces, epochs=2, batch_size=16, on_nonfinite="skip")
    raw["tasks"] = [{"name": "age", "kind": "flaky_age", "label": "age"}, "gender"]
    SometimesNaN.calls = 0
    result = hydranet.train(load_spec(raw, components=components), out_dir=tmp_path, components=components,
                            progress=False, echo=False)
    assert all(torch.isfinite(v).all() for v in model_state(tmp_path).values() if v.is_floating_point())
    assert all(torch.isfinite(torch.tensor(row["train_loss.age"])) for row in result.history)
    assert "steps with a non-finite loss" in (tmp_path / "train.log").read_text()


class NaNAfterEpochOne(RegressionTask):
    """Every training step's loss is NaN after the first `steps` (epoch 1's, at batch_size 32)."""

    calls = 0
    steps = 5

    def per_sample_loss(self, output, target):
        loss = super().per_sample_loss(output, target)
        if torch.is_grad_enabled():  # a training step, not validation
            NaNAfterEpochOne.calls += 1
            if NaNAfterEpochOne.calls > NaNAfterEpochOne.steps:
                return loss * float("nan")
        return loss


def test_an_epoch_whose_every_step_is_skipped_stops_the_run(faces, tmp_path, capsys):
    """It used to log losses and weights of 0 for the epoch and finish 'best epoch 0' with exit status 0."""
    components = with_task_kind("nan_later", NaNAfterEpochOne, RegressionParams, plugin="nan-later")
    raw = tiny_spec(faces, epochs=3, on_nonfinite="skip")
    raw["tasks"] = [{"name": "age", "kind": "nan_later", "label": "age"}, "gender"]
    NaNAfterEpochOne.calls = 0
    with pytest.raises(TrainingError) as caught:
        hydranet.train(load_spec(raw, components=components), out_dir=tmp_path, components=components,
                       progress=False, echo=True)
    message = ("every step of epoch 2 had a non-finite loss and was skipped (train.on_nonfinite: skip), so nothing "
               f"was trained. Training stopped. The last good checkpoint is {tmp_path / 'last.pt'} (epoch 1). "
               "Try a lower train.lr, check the tasks' labels, or use another weighting.")
    assert str(caught.value) == message
    assert [row["epoch"] for row in metric_rows(tmp_path)] == ["1"]  # no row of zeros for epoch 2
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    log = (tmp_path / "train.log").read_text()
    assert log.count(message) == 1 and "epoch 2: skipped 5 steps with a non-finite loss" in log
    assert message not in capsys.readouterr().err  # the error carries it to the console


def test_a_non_finite_stop_is_said_once_on_the_console(faces, tmp_path):
    """The run wrote it to the console and the CLI printed it again as 'Error: ...'."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(faces, epochs=2, lr=1e12)))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "spec.yaml"), "--out", str(run_dir), "--no-progress"])
    assert result.exit_code == 1, result.output
    said = "Training stopped. "
    assert result.output.count(said) == 1 and "Error: non-finite loss for task" in result.output
    assert (run_dir / "train.log").read_text().count(said) == 1


class WrongShape(BinaryTask):
    def build_head(self, in_features: int) -> nn.Module:
        return nn.Linear(in_features, 3)  # a binary task needs one column


def test_head_of_the_wrong_shape_names_its_task_and_plugin(faces, tmp_path):
    components = with_task_kind("wrong", WrongShape, BinaryParams, plugin="shapes", distribution="hydranet-shapes", version="0.3")
    raw = tiny_spec(faces)
    raw["tasks"] = ["age", {"name": "smile", "kind": "wrong", "label": "gender"}]
    with pytest.raises(TrainingError) as caught:
        hydranet.train(load_spec(raw, components=components), out_dir=tmp_path, components=components,
                       progress=False, echo=False)
    message = str(caught.value)
    assert "task 'smile'" in message and "plugin 'shapes' (hydranet-shapes 0.3)" in message
    assert "(2, 3)" in message and "expected (2, 1)" in message


def test_a_resumed_run_folder_checks_metrics_csv_against_the_tasks_it_is_given(tmp_path: Path) -> None:
    """The caller has read the run's spec (last.pt's): its task names are used, spec.yaml is not read again."""
    from hydranet.core.errors import HydranetError
    from hydranet.core.run import RunFolder

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,train_loss.age,val_loss.age\n1,0.5,0.6\n")
    (run / "spec.yaml").write_text("tasks: [{name: smile}]\n")
    RunFolder(run, echo=False, tasks=["age"]).close()
    with pytest.raises(HydranetError, match=r"has no train_loss.smile and val_loss.smile columns"):
        RunFolder(run, echo=False)  # without them, spec.yaml's
    (run / "metrics.csv").write_text("")
    with pytest.raises(HydranetError, match=r"metrics.csv is empty \(it has no header\)"):
        RunFolder(run, echo=False, tasks=["age"])


@pytest.mark.filterwarnings("ignore:Validating sparse tensor")  # torch.load checks a sparse tensor it reads
def test_weights_that_misfit_with_every_name_and_shape_right_name_no_part(checkpoint, tmp_path):
    """A tensor stored in another layout (sparse) has the model's name and shape yet does not load into it.

    No part differs in name or shape, so the message used to fall back on "the backbone differs"; it says only
    what is known: the weights do not fit the model the stored spec builds."""
    from hydranet.core.errors import CheckpointError

    data = torch.load(checkpoint.parent / "last.pt", weights_only=True)
    data["spec"]["train"]["epochs"] = 2  # resumable at epoch 2
    key = next(k for k, v in data["model"].items() if v.is_floating_point() and v.dim() == 2)
    data["model"][key] = data["model"][key].to_sparse()
    run = tmp_path / "run"
    run.mkdir()
    torch.save(data, run / "last.pt")
    with pytest.raises(CheckpointError) as caught:
        hydranet.train(resume=run, progress=False, echo=False)
    message = str(caught.value)
    assert message.startswith(f"{run / 'last.pt'}: model does not fit the run its spec describes:\n")
    assert f'While copying the parameter named "{key}"' in message
    assert (f"these weights do not fit the model the spec stored in {run / 'last.pt'} builds here, though every "
            "tensor has the name and shape it expects (the error above says why): the file was edited or damaged, "
            "or a plugin that builds the model (backbone 'tiny', tasks age, gender, ethnicity) changed since the "
            "run trained. Resume from an undamaged copy of it") in message
    assert "differs" not in message and "trained as another model" not in message
