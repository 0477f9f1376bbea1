"""A run survives what a SIGKILL, a full disk, a closed terminal or damaged files do to its folder.

Each test simulates the damage (a file removed or made stale, a write that fails, a stream that is closed) on a
tiny run of conftest's spec, then checks what training or resuming it does through `hydranet.train` or the CLI.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec
from hydranet.core import run_checkpoints
from hydranet.core.cli import cli
from hydranet.core.errors import TrainingError
from hydranet.core.spec import load_spec


def trained(faces, folder: Path, components, test_fraction: float = 0, **train) -> Path:
    raw = tiny_spec(faces, **train)
    raw["data"]["test_fraction"] = test_fraction
    spec = load_spec(raw, components=components)
    hydranet.train(spec, out_dir=folder, components=components, progress=False, echo=False)
    return folder


@pytest.fixture(scope="module")
def finished_run(faces, tmp_path_factory) -> Path:
    """A finished 2-epoch run, trained once: tests copy it before damaging it."""
    from hydranet.core.plugins import load_components, make_plugin_manager

    components = load_components(make_plugin_manager(entry_points=False))
    return trained(faces, tmp_path_factory.mktemp("finished") / "run", components, epochs=2, test_fraction=0.2)


def flat(nested: dict) -> dict:
    return {f"{task}.{metric}": value for task, metrics in nested.items() for metric, value in metrics.items()}


def copy_of(run: Path, where: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, where / run.name))


# ------------------------------------------------------------------ 1. killed while writing its last files


def test_checkpoints_are_written_last_first_so_a_kill_between_them_loses_no_best_epoch(faces, tmp_path, components,
                                                                                     monkeypatch):
    written = []
    real = run_checkpoints.checkpoint_module.atomic_torch_save
    monkeypatch.setattr(run_checkpoints.checkpoint_module, "atomic_torch_save",
                        lambda state, path: (written.append(Path(path).name), real(state, path)))
    trained(faces, tmp_path / "run", components, epochs=2)
    assert written[:2] == ["last.pt", "best.pt"]  # epoch 1 always improves
    assert set(written) == {"best.pt", "last.pt"}


def test_a_run_killed_between_last_pt_and_best_pt_resumes_with_best_pt_written_from_last_pt(faces, tmp_path,
                                                                                           components, monkeypatch):
    """last.pt of epoch 2 (the best so far) is written, best.pt still holds epoch 1: nothing is lost on resume."""
    real = run_checkpoints.checkpoint_module.atomic_torch_save

    def killed_before_best_of_epoch_2(state, path):
        if state["epoch"] == 2 and Path(path).name == "best.pt":
            raise KeyboardInterrupt  # stands in for SIGKILL: nothing after it runs
        real(state, path)

    monkeypatch.setattr(run_checkpoints.checkpoint_module, "atomic_torch_save", killed_before_best_of_epoch_2)
    with pytest.raises(BaseException):
        trained(faces, tmp_path / "run", components, epochs=3)
    run = tmp_path / "run"
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["progress"]["best_epoch"] == 2  # the tiny run improves every epoch
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(run_checkpoints.checkpoint_module, "atomic_torch_save", real)

    seen = {}
    restore = run_checkpoints.RunCheckpoints._restore

    def restore_then_look(self, state):
        restore(self, state)
        seen.update(torch.load(run / "best.pt", weights_only=True))  # before epoch 3 trains

    monkeypatch.setattr(run_checkpoints.RunCheckpoints, "_restore", restore_then_look)
    hydranet.train(components=components, resume=run, progress=False, echo=False)
    assert seen["epoch"] == 2 and all(torch.equal(seen["model"][k], last["model"][k]) for k in last["model"])
    assert "best.pt was stale (epoch 1); wrote it again from last.pt, which holds epoch 2, the best" in (
        run / "train.log").read_text()


def test_resuming_a_run_killed_before_its_summary_completes_it(finished_run, tmp_path, components):
    run = copy_of(finished_run, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()
    rows = (run / "metrics.csv").read_text()
    result = hydranet.train(components=components, resume=run, progress=False, echo=False)
    assert (run / "summary.json").is_file() and (run / "metrics.csv").read_text() == rows  # nothing trained again
    again = json.loads((run / "summary.json").read_text())
    assert again["best_epoch"] == summary["best_epoch"]
    for key in ("best", "test", "final"):  # "best" is read back from metrics.csv (9 significant digits)
        assert flat(again[key]) == pytest.approx(flat(summary[key]), rel=1e-6), key
    assert result.best_epoch == summary["best_epoch"] and len(result.history) == 2
    log = (run / "train.log").read_text()
    assert "run stopped before writing summary.json: completing it" in log and "completed the run" in log
    with pytest.raises(TrainingError, match="nothing left to train"):  # finished now: as any finished run
        hydranet.train(components=components, resume=run, progress=False, echo=False)


def test_a_stale_best_pt_of_a_killed_run_is_written_again_from_last_pt(finished_run, tmp_path, components):
    run = copy_of(finished_run, tmp_path)
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["progress"]["best_epoch"] == 2  # the tiny run improves every epoch
    stale = torch.load(run / "best.pt", weights_only=True)
    stale["epoch"] = 1
    stale["model"] = {key: value + 1 if value.is_floating_point() else value for key, value in stale["model"].items()}
    torch.save(stale, run / "best.pt")
    (run / "summary.json").unlink()
    result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "was stale (epoch 1); wrote it again from last.pt" in result.output
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == 2 and all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert (run / "summary.json").is_file()


def test_the_cli_completes_a_run_that_lost_its_summary_and_its_metrics_csv(finished_run, tmp_path):
    """No history to read the last epoch from: the closing table raised an IndexError after the run completed."""
    run = copy_of(finished_run, tmp_path)
    (run / "summary.json").unlink()
    (run / "metrics.csv").unlink()
    result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "metrics after epoch 2 (the best epoch: best.pt)" in result.output
    assert (run / "summary.json").is_file()


def test_a_sweep_rerun_completes_a_run_killed_before_its_summary(faces, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces, epochs=1)))
    out = tmp_path / "w"
    command = ["train", str(spec), "--sweep", "train.seed=0,1", "--out", str(out), "--no-progress"]
    assert CliRunner().invoke(cli, command).exit_code == 0
    killed = next(out.glob("*seed=1"))
    (killed / "summary.json").unlink()
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert (killed / "summary.json").is_file() and "completed the run" in result.output
    assert "epoch 1/1" not in result.output  # nothing trained again


# ------------------------------------------------------------------ 2. a full disk while a checkpoint is written


def test_a_full_disk_while_saving_a_checkpoint_is_one_message_naming_the_file_and_the_way_on(faces, tmp_path,
                                                                                           monkeypatch):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces, epochs=2)))
    run = tmp_path / "run"
    real = run_checkpoints.checkpoint_module.atomic_torch_save
    calls = []

    def full_after_epoch_one(state, path):
        calls.append(path)
        if state["epoch"] == 2 and Path(path).name == "last.pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(state, path)

    monkeypatch.setattr(run_checkpoints.checkpoint_module, "atomic_torch_save", full_after_epoch_one)
    result = CliRunner().invoke(cli, ["train", str(spec), "--out", str(run), "--no-progress"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "Errno" not in result.output
    assert (f"cannot write checkpoint {run / 'last.pt'}: no space left on the disk; the previous last.pt is intact "
            "(a checkpoint is written to a temporary file and renamed into place only once whole). Free space on "
            f"the disk of {run} and continue with hydranet train --resume {run}") in result.output
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


def test_torch_s_wrapped_write_error_comes_out_as_the_os_error(tmp_path, monkeypatch):
    from hydranet.core.checkpoint import atomic_torch_save

    def zip_writer_fails(obj, handle):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing")

    monkeypatch.setattr(torch, "save", zip_writer_fails)
    with pytest.raises(OSError) as caught:
        atomic_torch_save({"a": 1}, tmp_path / "last.pt")
    assert caught.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def full_disk_run(tmp_path, faces, epochs: int = 2) -> tuple[list[str], Path]:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces, epochs=epochs)))
    return ["train", str(spec), "--out", str(tmp_path / "run"), "--no-progress"], tmp_path / "run"


def no_space() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_appending_to_metrics_csv_leaves_no_half_row_and_says_how_to_go_on(faces, tmp_path,
                                                                                           monkeypatch):
    import os

    command, run = full_disk_run(tmp_path, faces)
    real, appended = os.fsync, []

    def full_at_epoch_2s_row(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.csv"):
            appended.append(fd)
            if len(appended) == 2:
                raise no_space()  # the row is in the file, not yet on the disk: as a refused write leaves it
        real(fd)

    monkeypatch.setattr(os, "fsync", full_at_epoch_2s_row)
    result = CliRunner().invoke(cli, command)
    monkeypatch.setattr(os, "fsync", real)
    assert result.exit_code == 1 and "Traceback" not in result.output and "Errno" not in result.output
    assert (f"cannot write {run / 'metrics.csv'}: no space left on the disk; metrics.csv is as it was before epoch "
            f"2's row, which is trained again on resume. Free space on the disk of {run} and continue with "
            f"hydranet train --resume {run}") in result.output
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,")  # the header and epoch 1's whole row, nothing of epoch 2
    again = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2"]


def test_a_full_disk_while_writing_summary_json_is_completed_by_resume(faces, tmp_path, monkeypatch):
    from hydranet.core import run as run_module

    command, run = full_disk_run(tmp_path, faces, epochs=1)
    real = run_module.atomic_write_text

    def full_at_summary(path, text):
        if Path(path).name == "summary.json":
            raise no_space()
        real(path, text)

    monkeypatch.setattr(run_module, "atomic_write_text", full_at_summary)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (f"cannot write {run / 'summary.json'}: no space left on the disk; no summary.json was written. Free "
            f"space on the disk of {run} and continue with hydranet train --resume {run}") in result.output
    monkeypatch.setattr(run_module, "atomic_write_text", real)
    again = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert again.exit_code == 0 and "completed the run" in again.output and (run / "summary.json").is_file()


def test_a_full_disk_while_writing_train_log_stops_the_run_with_the_line_still_shown(faces, tmp_path, monkeypatch):
    import builtins

    from hydranet.core import run as run_module

    command, run = full_disk_run(tmp_path, faces)
    real_save, real_open, full = run_checkpoints.checkpoint_module.atomic_torch_save, builtins.open, []

    def save_then_fill_the_disk(state, path):
        real_save(state, path)
        full.append(state["epoch"] == 2)

    def refusing_open(path, mode="r", *args, **kwargs):
        if any(full) and Path(path).name == "train.log" and "a" in mode:
            raise no_space()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(run_checkpoints.checkpoint_module, "atomic_torch_save", save_then_fill_the_disk)
    monkeypatch.setattr(run_module, "open", refusing_open, raising=False)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "epoch 2/2" in result.output  # the line train.log refused reached the console
    assert (f"cannot write {run / 'train.log'}: no space left on the disk; train.log has every line before this "
            f"one. Free space on the disk of {run} and continue with hydranet train --resume {run}") in result.output


# ------------------------------------------------------------------ 3. a console that is gone


class ClosedPipe:
    """stderr piped into `head`, which has exited: every write raises BrokenPipeError."""

    writes = 0

    def write(self, text):
        ClosedPipe.writes += 1
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def isatty(self):
        return False


def test_a_closed_console_does_not_stop_the_run_and_train_log_keeps_every_line(faces, tmp_path, components,
                                                                                monkeypatch):
    monkeypatch.setattr("sys.stderr", ClosedPipe())
    spec = load_spec(tiny_spec(faces, epochs=2), components=components)
    result = hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=True)
    monkeypatch.undo()
    assert ClosedPipe.writes >= 1 and len(result.history) == 2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log and "BrokenPipe" not in log
    assert (tmp_path / "run" / "summary.json").is_file()


# ------------------------------------------------------------------ 6, 7. what a killed run leaves; metrics.csv damage


def stopped_after_epoch(faces, run: Path, components, monkeypatch, *, epoch: int, epochs: int) -> Path:
    """A run of `epochs` stopped (as by Ctrl-C during validation) once epoch `epoch` is saved."""
    from hydranet.core.engine import Trainer
    from hydranet.core.errors import TrainingInterrupted

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_stop_agreed", lambda self: self.progress_state.epoch == epoch + 1)
        with pytest.raises(TrainingInterrupted):
            trained(faces, run, components, epochs=epochs)
    return run


def test_a_killed_writer_s_temporaries_are_removed_when_the_run_is_resumed_and_logged(faces, tmp_path, components,
                                                                                      monkeypatch):
    import os
    import time

    run = stopped_after_epoch(faces, tmp_path / "run", components, monkeypatch, epoch=1, epochs=2)
    left = [run / ".best.pt.123@0badcafe.ab12cd34.tmp", run / ".last.pt.x7y8z9w0.tmp"]  # another machine; none named
    for path in left:
        path.write_bytes(b"half a checkpoint")
        os.utime(path, (time.time() - 2 * 24 * 3600,) * 2)  # untouched for two days
    fresh = run / ".summary.json.k3j4h5g6.tmp"  # a day has not passed: perhaps a live writer's on another machine
    fresh.write_text("{")
    mine = run / "notes.tmp"
    mine.write_text("the user's")
    hydranet.train(components=components, resume=run, progress=False, echo=False)
    assert not any(path.exists() for path in left) and fresh.exists() and mine.exists()
    assert ("removed 2 temporary files that a killed run left while writing: .last.pt.x7y8z9w0.tmp, "
            ".best.pt.123@0badcafe.ab12cd34.tmp") in (run / "train.log").read_text()


@pytest.mark.parametrize("damage", ["row", "file"])
def test_resume_warns_about_epochs_missing_from_metrics_csv(faces, tmp_path, components, monkeypatch, damage):
    run = stopped_after_epoch(faces, tmp_path / "run", components, monkeypatch, epoch=3, epochs=4)
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    if damage == "row":
        (run / "metrics.csv").write_text("".join(lines[:2] + lines[3:]))  # epoch 2's row deleted
    else:
        (run / "metrics.csv").unlink()
    result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    missing = "row for epoch 2" if damage == "row" else "rows for epochs 1-3"
    warning = (f"warning: {run / 'metrics.csv'} has no {missing} of the 3 epochs in last.pt (rows deleted, or the "
               "file removed); they cannot be recovered")
    assert warning in result.output and warning in (run / "train.log").read_text()


# ------------------------------------------------------------------ 9. wording, and a refused run's folder


def test_an_out_folder_under_a_file_says_the_file_is_not_a_folder(faces, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces, epochs=1)))
    (tmp_path / "blockfile").write_text("")
    result = CliRunner().invoke(cli, ["train", str(spec), "--out", str(tmp_path / "blockfile" / "run"),
                                      "--no-progress"])
    assert result.exit_code == 1
    assert f"{tmp_path / 'blockfile'} is a file, not a folder" in result.output
    assert "Not a directory" not in result.output


def test_a_run_refused_for_low_disk_space_leaves_no_folder_it_made(tmp_path):
    from hydranet.core.run import RunFolder

    with pytest.raises(hydranet.HydranetError, match="MiB free on the disk of"):
        RunFolder(tmp_path / "new" / "run", fresh=True, min_free_bytes=2**62)
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(hydranet.HydranetError, match="MiB free on the disk of"):
        RunFolder(tmp_path / "mine", fresh=True, min_free_bytes=2**62)
    assert (tmp_path / "mine").is_dir()  # the user's own folder stays


def test_a_truncated_last_pt_points_to_a_new_run_from_best_pt_not_to_resuming_from_it(finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[:len(data) // 2])
    (run / "summary.json").unlink()
    result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 1
    assert (f"It cannot be resumed from (best.pt cannot either: it keeps no training progress); start a new run from "
            f"the best epoch's weights with init_from: {run / 'best.pt'}.") in result.output
    assert "a run folder keeps last.pt and best.pt" not in result.output


def test_a_checkpoint_whose_read_fails_with_an_os_error_says_so_without_the_errno_text(finished_run, monkeypatch):
    def cut_short(*args, **kwargs):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(torch, "load", cut_short)
    with pytest.raises(hydranet.HydranetError) as caught:
        hydranet.load(finished_run / "best.pt")
    assert "the file is truncated or damaged (reading it failed)" in str(caught.value)
    assert "Errno" not in str(caught.value) and "Invalid argument" not in str(caught.value)


# ------------------------------------------------------------------ 5. a resumed run's timings


def stopped_mid_epoch(faces, run: Path, components, monkeypatch, *, epoch: int, step: int, epochs: int) -> Path:
    """A run of `epochs` stopped (as by SIGTERM) after step `step` of epoch `epoch`, saved there."""
    from hydranet.core.engine import Trainer
    from hydranet.core.errors import TrainingInterrupted

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_stop_requested", lambda self, done: (self.epoch_running, done) == (epoch, step))
        with pytest.raises(TrainingInterrupted):
            trained(faces, run, components, epochs=epochs)
    return run


def test_a_resumed_run_s_timings_cover_every_epoch_and_a_resumed_epoch_counts_its_steps_before_the_stop(
        faces, tmp_path, components, monkeypatch):
    run = stopped_mid_epoch(faces, tmp_path / "run", components, monkeypatch, epoch=2, step=3, epochs=3)
    progress = torch.load(run / "last.pt", weights_only=True)["progress"]
    assert progress["seconds"] > 0 and len(progress["epoch_train_seconds"]) == 1
    result = hydranet.train(components=components, resume=run, progress=False, echo=False)
    timings = json.loads((run / "summary.json").read_text())["timings"]
    assert len(timings["epoch_train_seconds"]) == len(timings["epoch_val_seconds"]) == 3
    assert timings["epoch_train_seconds"][0] == progress["epoch_train_seconds"][0]
    assert timings["epoch_train_seconds"][1] > progress["seconds"]  # the steps before the stop, and those after
    assert result.timings["epoch_train_seconds"] == timings["epoch_train_seconds"]


def test_an_older_checkpoint_s_resumed_epoch_is_left_out_of_the_timings_and_earlier_ones_come_from_metrics_csv(
        faces, tmp_path, components, monkeypatch):
    run = stopped_mid_epoch(faces, tmp_path / "run", components, monkeypatch, epoch=2, step=3, epochs=2)
    state = torch.load(run / "last.pt", weights_only=True)
    for key in ("seconds", "epoch_train_seconds", "epoch_val_seconds"):  # as an older hydranet wrote it
        del state["progress"][key]
    torch.save(state, run / "last.pt")
    first = float((run / "metrics.csv").read_text().splitlines()[1].split(",")[1])
    hydranet.train(components=components, resume=run, progress=False, echo=False)
    timings = json.loads((run / "summary.json").read_text())["timings"]
    assert timings["epoch_train_seconds"] == [first, None] and len(timings["epoch_val_seconds"]) == 2


def test_an_older_checkpoint_s_timings_are_read_by_epoch_so_a_lost_row_shifts_none(faces, tmp_path, components,
                                                                                    monkeypatch):
    run = stopped_mid_epoch(faces, tmp_path / "run", components, monkeypatch, epoch=3, step=2, epochs=3)
    state = torch.load(run / "last.pt", weights_only=True)
    for key in ("seconds", "epoch_train_seconds", "epoch_val_seconds"):  # as an older hydranet wrote it
        del state["progress"][key]
    torch.save(state, run / "last.pt")
    header, first, second = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text(f"{header}\n{second}\n")  # epoch 1's row lost
    hydranet.train(components=components, resume=run, progress=False, echo=False)
    timings = json.loads((run / "summary.json").read_text())["timings"]
    assert timings["epoch_train_seconds"] == [None, float(second.split(",")[1]), None]


# ------------------------------------------------------------------ 4. data that changed under a resumed run


def test_resume_warns_when_the_data_changed_and_says_validation_metrics_are_not_comparable(faces, tmp_path,
                                                                                            components, monkeypatch):
    import shutil

    from hydranet.core.engine import Trainer
    from hydranet.core.errors import TrainingInterrupted

    data = Path(shutil.copytree(faces, tmp_path / "data"))
    spec = load_spec(tiny_spec(data, epochs=2), components=components)
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_stop_agreed", lambda self: self.progress_state.epoch == 2)
        with pytest.raises(TrainingInterrupted):
            hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["data_fingerprint"]
    assert saved["usable"] == 240 and saved["train"] + saved["val"] == 240
    min(data.glob("*.jpg")).unlink()  # one image gone
    result = hydranet.train(components=components, resume=tmp_path / "run", progress=False, echo=False)
    warning = next(note for note in result.notes if "data changed" in note)
    assert warning.startswith("warning: the run's data changed since it started (239 usable images, ")
    assert "when last.pt was saved), so the split was drawn again" in warning
    assert "validation metrics before and after this resume are not comparable" in warning
    assert f"init_from: {tmp_path / 'run' / 'last.pt'}" in warning


def test_resume_of_unchanged_data_or_an_older_checkpoint_does_not_warn(faces, tmp_path, components, monkeypatch):
    run = stopped_after_epoch(faces, tmp_path / "run", components, monkeypatch, epoch=1, epochs=2)
    hydranet.train(components=components, resume=run, progress=False, echo=False)
    assert "data changed" not in (run / "train.log").read_text()
    run = stopped_after_epoch(faces, tmp_path / "old", components, monkeypatch, epoch=1, epochs=2)
    state = torch.load(run / "last.pt", weights_only=True)
    del state["data_fingerprint"]  # as an older hydranet wrote it
    torch.save(state, run / "last.pt")
    hydranet.train(components=components, resume=run, progress=False, echo=False)
    assert "data changed" not in (run / "train.log").read_text()


# ------------------------------------------------------------------ 8. a folder of other things as --out


def test_a_new_run_refuses_a_folder_of_other_files_and_names_a_folder_inside_it(faces, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(faces, epochs=1)))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"a photo")
    result = CliRunner().invoke(cli, ["train", str(spec), "--out", str(photos), "--no-progress"])
    assert result.exit_code == 1
    assert (f"{photos} is not empty (cat.jpg) and holds no run" in result.output
            and f"--out {photos / 'RUN-NAME'}" in result.output)
    assert sorted(p.name for p in photos.iterdir()) == ["cat.jpg"]  # nothing written among them
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".DS_Store").write_bytes(b"")  # what a system leaves in any folder: still an empty one
    assert CliRunner().invoke(cli, ["train", str(spec), "--out", str(hidden), "--no-progress"]).exit_code == 0
    assert (hidden / "summary.json").is_file()


def test_completing_a_run_whose_best_pt_is_lost_skips_the_test_split_instead_of_failing(finished_run, tmp_path,
                                                                                        components):
    """best.pt deleted, its epoch not last.pt's: the run is completed, its summary says no test metrics."""
    run = copy_of(finished_run, tmp_path)
    state = torch.load(run / "last.pt", weights_only=True)
    state["progress"]["best_epoch"] = 1  # as if epoch 2 had not improved: last.pt cannot stand in for best.pt
    torch.save(state, run / "last.pt")
    (run / "best.pt").unlink()
    (run / "summary.json").unlink()
    result = hydranet.train(components=components, resume=run, progress=False, echo=False)
    summary = json.loads((run / "summary.json").read_text())
    assert result.test is None and summary["test"] is None and summary["test_epoch"] is None
    log = (run / "train.log").read_text()
    assert "is missing, not epoch 1, the best; those weights are lost" in log
    assert "warning: no test metrics: the best epoch's weights cannot be read" in log


def test_a_stale_best_pt_is_not_scored_on_the_test_split_as_the_best_epoch(finished_run, tmp_path, components):
    """best.pt holds another epoch than the best (a killed older hydranet): its weights are not passed off as it."""
    run = copy_of(finished_run, tmp_path)
    state = torch.load(run / "last.pt", weights_only=True)
    state["progress"]["best_epoch"] = 1
    torch.save(state, run / "last.pt")  # best.pt holds epoch 2
    (run / "summary.json").unlink()
    result = hydranet.train(components=components, resume=run, progress=False, echo=False)
    assert result.test is None
    assert f"warning: no test metrics: {run / 'best.pt'} holds epoch 2, not epoch 1, the best" in \
        (run / "train.log").read_text()


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="no SIGHUP on this platform")
def test_a_run_started_under_nohup_ignores_sighup_and_trains_to_its_end(faces, tmp_path):
    """nohup ignores SIGHUP so that a closed terminal does not stop the command: the run must not undo that."""
    import signal

    from test_robustness_data import HangUpAt, hangup_spec

    spec, components = hangup_spec(faces)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert HangUpAt.calls >= HangUpAt.at and (tmp_path / "run" / "summary.json").is_file()
    assert "SIGHUP received" not in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.skipif(__import__("os").name == "nt", reason="a writer's PID is not checked on Windows")
def test_a_temporary_of_a_writer_in_another_pid_namespace_is_not_taken_for_a_killed_one(tmp_path, monkeypatch):
    """Containers on one machine may share its host name (host networking) but not its PIDs: a PID that does not
    exist here may be a live writer there, so only age makes its temporary stale."""
    from hydranet.core import atomic

    gone = 2**22 + 1  # above Linux's largest pid_max: no process has it
    monkeypatch.setattr(atomic, "_pid_namespace", lambda: "pid:[1]")
    theirs = tmp_path / f".last.pt.{gone}@{atomic._host()}.ab12cd34.tmp"
    theirs.write_bytes(b"being written")
    assert atomic.stale_temporaries(tmp_path, ["last.pt"]) == [theirs]  # seen from its own namespace: gone
    monkeypatch.setattr(atomic, "_pid_namespace", lambda: "pid:[2]")
    assert atomic.stale_temporaries(tmp_path, ["last.pt"]) == []


def test_a_best_pt_without_an_epoch_is_called_damaged_not_epoch_minus_one(finished_run, tmp_path, components):
    run = copy_of(finished_run, tmp_path)
    best = torch.load(run / "best.pt", weights_only=True)
    del best["epoch"]
    torch.save(best, run / "best.pt")
    (run / "summary.json").unlink()
    hydranet.train(components=components, resume=run, progress=False, echo=False)
    log = (run / "train.log").read_text()
    assert "best.pt was damaged; wrote it again from last.pt, which holds epoch 2, the best" in log
    assert "epoch -1" not in log
