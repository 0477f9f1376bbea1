"""What a walkthrough of `hydranet train --nproc N` and `--sweep ... --nproc N` found: the resume hint names the
process count, the reseeding message names the draws reseeded, a sweep's failed run prints its error once, the
process count is recorded and compared, a sweep folder's runs its compare.csv does not list are named, and a
launch leaves no torchelastic folder behind.

Most is checked without launching; the one launch is a sweep run that fails before it trains.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

import hydranet
from conftest import tiny_spec
from hydranet.core import launch
from hydranet.core.engine import Trainer
from hydranet.core.errors import TrainingInterrupted
from hydranet.core.resume import restore_generators
from hydranet.core.run import resume_command
from test_compare import compare_json, make_run, metrics
from test_distributed import assert_no_torchrun_noise, group_norm_spec, hydranet_cli


# ------------------------------------------------------------------ 1. the resume hint names --nproc


def test_the_resume_command_names_the_process_count_above_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resume_command("runs/i40") == "hydranet train --resume runs/i40"
    assert resume_command("runs/i40", processes=2) == "hydranet train --resume runs/i40 --nproc 2"
    assert resume_command("runs/i40", processes=1) == "hydranet train --resume runs/i40"
    monkeypatch.setenv("WORLD_SIZE", "4")  # a torchrun worker: its messages that name no count take the launch's
    assert resume_command("runs/i40") == "hydranet train --resume runs/i40 --nproc 4"
    assert resume_command("runs/i40", "overrides", processes=2) == 'hydranet.train(resume="runs/i40")'


def test_a_stopped_two_process_run_says_to_continue_on_two(tmp_path):
    logged: list[str] = []
    trainer = SimpleNamespace(stop_signal=signal.SIGINT, option="--set", dist=SimpleNamespace(world_size=2),
                              run_folder=SimpleNamespace(path=Path("runs/i40"), log=logged.append,
                                                         last_checkpoint=Path("runs/i40/last.pt")))
    with pytest.raises(TrainingInterrupted) as stopped:
        Trainer._stop(trainer, "at epoch 11, step 2")
    assert str(stopped.value).endswith("Continue with: hydranet train --resume runs/i40 --nproc 2"), logged
    assert logged == [str(stopped.value)]


# ------------------------------------------------------------------ 2. the draws the reseeding message names


def test_another_process_count_reseeds_dropout_only_and_says_so():
    augment, lines = torch.Generator(), []
    states = {"augment": augment.get_state(), "torch": torch.get_rng_state()}
    before = torch.get_rng_state()
    try:
        restore_generators({"augment": states["augment"]}, augment, nn.Module(), epoch=3, step=0, log=lines.append,
                           unsaved="the checkpoint holds the random states of 2 processes, not those of each of "
                                   "this run's 1")
    finally:
        torch.set_rng_state(before)
    assert len(lines) == 1 and lines[0].endswith("its random draws (dropout) differ from an uninterrupted run's"), \
        lines


def test_another_kind_of_device_names_the_draws_whose_states_did_not_fit():
    cuda_state = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    augment, lines = torch.Generator(), []
    before = torch.get_rng_state()
    try:
        restore_generators({"augment": cuda_state, "torch": torch.get_rng_state()}, augment, nn.Module(),
                           epoch=2, step=3, log=lines.append)
    finally:
        torch.set_rng_state(before)
    assert len(lines) == 1 and "another kind of device than this run's cpu" in lines[0], lines
    if not torch.cuda.is_available():  # on the CPU only the augmentation's (a GPU state) was reseeded
        assert "its random draws (augmentation) differ" in lines[0], lines


# ------------------------------------------------------------------ 3. a sweep's failed run: its error once


def test_rank_zero_leaves_its_error_to_a_caller_that_prints_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(launch.ERRORS_VARIABLE, str(tmp_path))
    monkeypatch.delenv("HYDRANET_TRACEBACK", raising=False)
    monkeypatch.delenv(launch.ERROR_FILE_VARIABLE, raising=False)
    assert launch.error_prefix("non-finite loss") == ""  # `train --nproc 2` alone: rank 0 prints it
    monkeypatch.setenv(launch.ERROR_FILE_VARIABLE, str(tmp_path / "error"))
    assert launch.error_prefix("non-finite loss") is None  # a sweep's launch: the sweep prints it
    assert (tmp_path / "rank0").read_text() == "non-finite loss"  # for the other ranks and the launcher
    monkeypatch.setenv("HYDRANET_TRACEBACK", "1")
    assert launch.error_prefix("non-finite loss") == ""  # the traceback is printed where it is


def test_a_failed_run_of_an_nproc_sweep_prints_its_error_once(faces, tmp_path):
    spec_file, out = tmp_path / "spec.yaml", tmp_path / "bad"
    spec_file.write_text(yaml.safe_dump(group_norm_spec(faces, epochs=2, batch_size=32)))
    process = hydranet_cli("train", str(spec_file), "--sweep", "data.root=nope", "--nproc", "2", "--out", str(out),
                           "--no-progress")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    # as the one-process sweep says it: when the run fails, and in the closing list; not the worker's "Error:" too
    assert output.count("UTKFace folder nope does not exist") == 2, output
    assert output.count("run 1/1 failed: UTKFace folder nope does not exist") == 1, output
    assert "run 1/1 (data.root=nope): UTKFace folder nope does not exist" in output
    assert "Error: UTKFace folder nope" not in output
    assert_no_torchrun_noise(output)


# ------------------------------------------------------------------ 4. the process count recorded and compared


def test_summary_json_records_the_process_count(faces, tmp_path):
    hydranet.train(tiny_spec(faces, epochs=1), out_dir=tmp_path / "run", progress=False, echo=False)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["processes"] == 1


def with_processes(run: Path, count: int) -> Path:
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "processes": count}))
    return run


def test_compare_notes_runs_trained_on_different_numbers_of_processes(faces, tmp_path):
    spec = tiny_spec(faces)
    one = with_processes(make_run(tmp_path / "one", spec, [metrics(10, 0.5, 0.4, 0.2)]), 1)
    two = with_processes(make_run(tmp_path / "two", spec, [metrics(11, 0.5, 0.4, 0.2)]), 2)
    older = make_run(tmp_path / "older", spec, [metrics(12, 0.5, 0.4, 0.2)])  # before it was recorded: not counted
    notes = [note for note in compare_json(one, two, older)["notes"] if "numbers of processes" in note]
    assert len(notes) == 1 and "(--nproc; one: 1, two: 2)" in notes[0], notes
    assert not any("processes" in note for note in compare_json(one, older)["notes"])


# ------------------------------------------------------------------ 5. runs of a sweep folder not in its compare.csv


def test_a_sweep_folders_run_that_its_compare_csv_does_not_list_is_shown_with_a_note(faces, tmp_path):
    spec, sweep = tiny_spec(faces), tmp_path / "sw"
    listed = [make_run(sweep / name, spec, [metrics(age, 0.5, 0.4, 0.2)])
              for name, age in (("weighting=sum", 10.0), ("weighting=dwa", 9.0))]
    (sweep / "compare.csv").write_text("run,delta_m_percent\n" + "".join(f"{run},0\n" for run in listed))
    earlier = make_run(sweep / "weighting=dwa-1234abcd", spec, [metrics(8, 0.5, 0.4, 0.2)])  # an earlier sweep's
    report = compare_json(sweep)
    assert [Path(run["run"]) for run in report["runs"]] == [*listed, earlier]  # shown, after the listed ones
    said = [note for note in report["notes"] if "last sweep" in note]
    assert said == [f"{earlier}: not in this folder's last sweep (compare.csv); shown as well"], report["notes"]
    assert not any("last sweep" in note for note in compare_json(*listed)["notes"])  # runs named one by one

    from hydranet.core.plot import plot_runs

    assert f"{earlier}: not in this folder's last sweep (compare.csv); shown as well" in \
        plot_runs([sweep], tmp_path / "charts").notes


# ------------------------------------------------------------------ 6. no torchelastic folder left behind


def test_the_launcher_gives_torchrun_a_log_folder_of_its_own_and_removes_it(monkeypatch, tmp_path):
    from torch.distributed import run as torchrun

    seen = []
    monkeypatch.setattr(torchrun, "run", lambda args: seen.append(args.log_dir))
    monkeypatch.delenv(launch.ERROR_FILE_VARIABLE, raising=False)
    assert launch.main(["--standalone", "--nproc-per-node=2", "-m", "hydranet", "train"]) == 0
    assert len(seen) == 1 and seen[0] is not None and Path(seen[0]).parent.name.startswith("hydranet-launch-"), seen
    assert not Path(seen[0]).parent.exists()  # removed with the launcher's own folder
    assert launch.ERRORS_VARIABLE not in os.environ
    mine = ["--log-dir", str(tmp_path), "--standalone", "-m", "hydranet", "train"]
    assert launch.with_log_dir(mine, tmp_path / "other") == mine  # the caller's own is kept


def test_compare_says_to_continue_a_stopped_two_process_run_on_two(faces, tmp_path):
    spec = tiny_spec(faces)
    done = make_run(tmp_path / "done", spec, [metrics(10, 0.5, 0.4, 0.2)] * 2)
    stopped = make_run(tmp_path / "stopped", spec, [metrics(11, 0.5, 0.4, 0.2)])  # epoch 1 of 2
    (stopped / "summary.json").unlink()  # written only when a run finishes
    torch.save({"progress": {"epoch": 2, "process_generators": [{}, {}]}}, stopped / "last.pt")  # 2 ranks' states
    notes = compare_json(done, stopped, "--epoch", "last")["notes"]
    assert any(f"continue it with `hydranet train --resume {stopped} --nproc 2`" in note for note in notes), notes
