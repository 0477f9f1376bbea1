"""`hydranet train SPEC --sweep KEY=V1,V2 --nproc N`: each run of the sweep its own torchrun launch of N processes.

The launched runs are 2-process gloo runs on CPU of the distributed tests' tiny
group-norm spec (a launch costs a few seconds of process start-up, so the real
ones are few); what the sweep does around them (the command line each run is
given, a failure, a stop) is also checked with `launch_local` stood in for.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from hydranet.core import distributed
from hydranet.core.cli import cli
from hydranet.core.launch import ERROR_FILE_VARIABLE
from hydranet.core.sweep import Combination, PlannedRun
from hydranet.core.sweep_launch import LaunchedRun, Launcher
from test_distributed import assert_no_torchrun_noise, group_norm_spec, hydranet_cli, processes_of, succeed


@pytest.fixture
def spec_file(faces, tmp_path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(group_norm_spec(faces, epochs=2, batch_size=32)))
    return path


def final_metrics(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["final"]


def test_each_run_is_a_two_process_launch_equal_to_that_run_trained_with_nproc_alone(spec_file, tmp_path,
                                                                                    monkeypatch):
    out = tmp_path / "w"
    output = succeed(hydranet_cli("train", str(spec_file), "--sweep", "weighting=sum,uncertainty", "--nproc", "2",
                                  "--out", str(out), "--no-progress"))
    assert "run 1/2 done: best epoch" in output and "run 2/2 done: best epoch" in output, output
    assert output.count("parameters identical on every rank") == 2, output  # both runs on 2 processes
    assert_no_torchrun_noise(output)
    names = ["weighting=sum", "weighting=uncertainty"]
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", *names]
    for name in names:
        assert (out / name / "summary.json").is_file() and (out / name / "last.pt").is_file()
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [row["run"] for row in rows] == [str(out / name) for name in names]
    assert f"wrote {out / 'compare.csv'}" in output
    # the same combination as one `train --nproc 2`: the same run, to the bit
    alone = tmp_path / "alone"
    succeed(hydranet_cli("train", str(spec_file), "--set", "weighting=uncertainty", "--nproc", "2",
                         "--out", str(alone), "--no-progress"))
    assert final_metrics(out / "weighting=uncertainty") == final_metrics(alone)
    # the same command again skips both, and launches nothing
    launched = fake_launches(monkeypatch, [])
    result = CliRunner().invoke(cli, ["train", str(spec_file), "--sweep", "weighting=sum,uncertainty", "--nproc",
                                      "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0 and result.output.count("finished already in") == 2, result.output
    assert launched == []


def test_a_failed_launch_is_named_by_its_run_with_the_error_its_processes_printed(spec_file, tmp_path):
    out = tmp_path / "bad"
    process = hydranet_cli("train", str(spec_file), "--sweep", "data.root=nope", "--nproc", "2", "--out", str(out),
                           "--no-progress")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    assert "1 of the sweep's 1 run failed:\n  run 1/1 (data.root=nope): UTKFace folder nope does not exist" in output
    assert "nothing to compare: every run of the sweep failed" in output
    assert_no_torchrun_noise(output)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="lists processes through /proc")
def test_ctrl_c_stops_the_whole_sweep_once_the_run_saved_and_says_how_to_continue(faces, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(group_norm_spec(faces, epochs=6, batch_size=8, log_every=1)))
    out = tmp_path / "seeds"
    process = hydranet_cli("train", str(spec), "--sweep", "train.seed=0,1", "--nproc", "2", "--out", str(out),
                           "--no-progress", threads=None, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (out / "train.seed=0" / "last.pt").is_file():
            assert process.poll() is None, process.communicate()[0]
            assert time.time() < deadline, "the first epoch never finished"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 128 + signal.SIGINT, output
        assert processes_of(out) == [], output
        assert (f"sweep stopped at run 1/2. To continue it (this run, then the rest), run hydranet train {spec} "
                f"--sweep train.seed=0,1 --nproc 2 --out {out}") in output
        assert not (out / "train.seed=1").exists() and not (out / "train.seed=0" / "summary.json").exists()
        assert_no_torchrun_noise(output)
    finally:
        if process.poll() is None:
            process.kill()
        for pid in processes_of(out):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ without launching


def fake_launches(monkeypatch, statuses: list[int], error: str = "") -> list[list[str]]:
    """launch_local stood in for: each launch records its command line and ends with the next status."""
    launched: list[list[str]] = []

    def launch(nproc: int, argv, device="auto") -> int:
        launched.append([str(nproc), *argv])
        status = statuses[len(launched) - 1]
        if status == 1 and error:  # as the launcher leaves rank 0's printed error for its caller
            Path(os.environ[ERROR_FILE_VARIABLE]).write_text(error)
        return status

    monkeypatch.setattr(distributed, "launch_local", launch)
    return launched


def test_a_failure_goes_on_with_the_next_run_and_a_signal_stops_the_sweep(spec_file, tmp_path, monkeypatch):
    launched = fake_launches(monkeypatch, [1, 128 + signal.SIGTERM], error="a plugin's own mistake")
    out = tmp_path / "w"
    result = CliRunner().invoke(cli, ["train", str(spec_file), "--set", "train.lr=0.01", "--sweep",
                                      "train.seed=0,1", "--nproc", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert launched == [["2", "train", str(spec_file), "--set", "train.lr=0.01", "--set", f"train.seed={seed}",
                         "--out", str(out / f"train.seed={seed}"), "--no-progress"] for seed in (0, 1)]
    assert "run 1/2 failed: a plugin's own mistake" in result.output
    assert (f"sweep stopped at run 2/2. To continue it (this run, then the rest), run hydranet train {spec_file} "
            f"--set train.lr=0.01 --sweep train.seed=0,1 --nproc 2 --out {out}") in result.output
    assert ERROR_FILE_VARIABLE not in os.environ


def test_a_stopped_run_is_launched_to_resume_from_its_folder():
    run = PlannedRun(Combination(1, (("train.seed", "0"),)), Path("runs/w/train.seed=0"), "resume")
    assert Launcher(2, "my.yaml", ("train.lr=0.01",)).argv(run) == ["train", "--resume", "runs/w/train.seed=0"]
    new = PlannedRun(run.combination, run.path, "new")
    assert Launcher(2, None, (), progress=True).argv(new) == ["train", "--set", "train.seed=0", "--out",
                                                               "runs/w/train.seed=0", "--progress"]


def test_a_batch_that_does_not_split_is_refused_for_each_combination_before_any_launch(spec_file, tmp_path,
                                                                                       monkeypatch):
    def no_launch(*args, **kwargs):
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(subprocess, "Popen", no_launch)
    out = tmp_path / "w"
    result = CliRunner().invoke(cli, ["train", str(spec_file), "--sweep", "train.batch_size=32,31",
                                      "--nproc", "2", "--out", str(out)])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "1 of the sweep's 2 runs cannot start, so none was started" in said
    assert ("run 2/2 (train.batch_size=31): train.batch_size = 31 is the global batch (all processes together) and "
            "must divide by the 2 processes; use 30 or 32 (in --sweep train.batch_size=...)") in said
    result = CliRunner().invoke(cli, ["train", str(spec_file), "--set", "train.batch_size=31", "--sweep",
                                      "train.seed=0,1", "--nproc", "2", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert ("run 1/2 (train.seed=0) and run 2/2 (train.seed=1): train.batch_size = 31 is the global batch"
            in " ".join(result.output.split()))
    assert "(--set train.batch_size=N)" in " ".join(result.output.split())
    assert not out.exists()


def test_more_processes_than_gpus_is_refused_for_the_runs_on_cuda_before_any_launch(spec_file, tmp_path,
                                                                                    monkeypatch):
    import torch

    launched: list[list[str]] = []
    monkeypatch.setattr(distributed, "run_forwarding_signals", lambda command, env=None: launched.append(command) or 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    out = tmp_path / "w"
    result = CliRunner().invoke(cli, ["train", str(spec_file), "--sweep", "train.device=cpu,cuda",
                                      "--nproc", "2", "--out", str(out)])
    assert result.exit_code == 1 and not launched and not out.exists(), result.output
    said = " ".join(result.output.split())
    assert ("run 2/2 (train.device=cuda): --nproc 2 asks for more processes than this machine's 1 GPU; "
            "use at most one per GPU") in said
    assert "run 1/2" not in said  # CPU processes are not counted against the GPUs


def test_a_launched_run_that_finished_with_no_finite_validation_loss_is_done_not_failed(tmp_path, monkeypatch):
    """In the sweep's own process such a run (a learning rate too high) is done, best epoch 0: so it is launched."""
    run = PlannedRun(Combination(1, (("train.lr", "10"),)), tmp_path / "train.lr=10", "new",
                     resolved=SimpleNamespace(spec=SimpleNamespace(train=SimpleNamespace(device="cpu"))))

    def launch(nproc: int, argv, device="auto") -> int:  # what the run leaves: every epoch's losses NaN
        run.path.mkdir()
        (run.path / "spec.yaml").write_text(yaml.safe_dump({"tasks": [{"name": "age"}], "train": {"epochs": 1}}))
        (run.path / "metrics.csv").write_text("epoch,val.loss,val.age.mae\n1,nan,nan\n")
        summary = {"best_epoch": 0, "higher_is_better": {"age": {"mae": False}}}
        (run.path / "summary.json").write_text(json.dumps(summary))
        return 0

    monkeypatch.setattr(distributed, "launch_local", launch)
    assert Launcher(2, "my.yaml")(run) == LaunchedRun(0, run.path)


# ------------------------------------------------------------------ the Python API: hydranet.sweep(..., nproc=N)


def test_the_python_api_launches_each_run_as_the_command_line_does(spec_file, tmp_path, monkeypatch):
    import hydranet

    launched = fake_launches(monkeypatch, [0, 0])  # launches that train nothing: each run then fails, named
    out = tmp_path / "py"
    result = hydranet.sweep(spec_file, {"train.seed": [0, 1]}, overrides=["train.lr=0.01"], out_dir=out, nproc=2,
                            progress=False, echo=False)
    assert launched == [["2", "train", str(spec_file), "--set", "train.lr=0.01", "--set", f"train.seed={seed}",
                         "--out", str(out / f"train.seed={seed}"), "--no-progress"] for seed in (0, 1)]
    assert result.outcomes == {1: "failed", 2: "failed"}
    assert "its processes ended without an error, but" in result.failures[0][1]


def test_the_python_apis_nproc_is_checked_before_any_run_starts(spec_file, faces, tmp_path, monkeypatch):
    import hydranet
    from hydranet.core.errors import InputError
    from hydranet.core.sweep import SweepProblem

    launched = fake_launches(monkeypatch, [])
    out = tmp_path / "py"
    for bad in (0, -1, True, 2.0, "2"):
        with pytest.raises(InputError, match=r"nproc is the number of processes each run trains with, a whole "
                                             rf"number from 1; got {bad!r}"):
            hydranet.sweep(spec_file, {"train.seed": [0, 1]}, out_dir=out, nproc=bad)
    with pytest.raises(InputError, match="spec is a spec file's path or a built-in spec's name, not a dict"):
        hydranet.sweep(yaml.safe_load(spec_file.read_text()), {"train.seed": [0, 1]}, out_dir=out, nproc=2)
    with pytest.raises(InputError, match="leave components out"):
        hydranet.sweep(spec_file, {"train.seed": [0, 1]}, out_dir=out, nproc=2, components=object())
    with pytest.raises(SweepProblem) as error:
        hydranet.sweep(spec_file, {"train.seed": [0, 1]}, overrides=["train.batch_size=31"], out_dir=out, nproc=2)
    said = " ".join(str(error.value).split())
    assert "2 of the sweep's 2 runs cannot start, so none was started" in said
    assert "must divide by the 2 processes; use 30 or 32 (overrides train.batch_size=N)" in said
    with pytest.raises(SweepProblem, match=r"use 30 or 32 \(in values train.batch_size=...\)"):
        hydranet.sweep(spec_file, {"train.batch_size": [32, 31]}, out_dir=out, nproc=2)
    assert launched == [] and not out.exists()


def test_the_python_apis_gpu_count_refusal_names_its_nproc_argument(spec_file, tmp_path, monkeypatch):
    """The refusal speaks the API's language (nproc=2), as the CLI's says --nproc 2."""
    import torch

    import hydranet
    from hydranet.core.sweep import SweepProblem

    launched = fake_launches(monkeypatch, [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SweepProblem) as error:
        hydranet.sweep(spec_file, {"train.device": ["cuda"]}, out_dir=tmp_path / "py", nproc=2)
    said = " ".join(str(error.value).split())
    assert "nproc=2 asks for more processes than this machine's 1 GPU; use at most one per GPU" in said
    assert "--nproc" not in said and launched == []
