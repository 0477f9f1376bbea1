"""Several processes train as one: 2-process gloo runs on CPU, launched by torchrun as a user would.

What "as one" means here (see `hydranet.core.distributed`): both ranks end with
bit-identical parameters (they apply the same all-reduced gradient), and the
result equals a one-process run with the same global batch and seed up to the
order of floating-point additions: the gradient is summed over two halves
instead of over one batch, a difference of about 1e-7 relative per step. The
tolerance below (1e-4 relative, 1e-5 absolute, after two epochs) leaves room
for that to grow through AdamW and the strategies' solvers, and is far below
the change any one step makes (about lr = 3e-3).

The backbone is the tiny CNN with GroupNorm: batch norm's statistics are per
process by design (as with DDP), which would make the comparison with one
process meaningless, not wrong.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pydantic import ValidationError

from click.testing import CliRunner

from conftest import tiny_spec
from hydranet.core import interrupts
from hydranet.core.cli import cli
from hydranet.core.checkpoint import read_checkpoint
from hydranet.core.distributed import Distributed, DistributedError
from hydranet.core.engine import Trainer
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
RTOL, ATOL = 1e-4, 1e-5
#: Strategies whose solver has a threshold or runs to a tolerance (PCGrad's conflict test, Aligned-MTL's
#: rank cutoff, Nash-MTL's iterative solve, MGDA's Frank-Wolfe) turn a last-bit difference into a small
#: but real one; they are compared at 1e-3 relative, 1e-4 absolute. MGDA also runs with its stop rule
#: (a step below `epsilon` ends Frank-Wolfe) switched off here: with it, one process may stop an
#: iteration earlier than two, a discontinuity of the algorithm itself, not of the distribution.
SOLVER_TOLERANCE = {"pcgrad", "aligned", "nashmtl", "mgda"}
EXTRA_PARAMS = {"mgda": {"epsilon": 1e-12}}


def group_norm_spec(faces: Path, **train: Any) -> dict:
    """Group norm (no batch statistics to differ) and SGD: AdamW's first steps move every weight by about
    lr * sign(gradient), so a gradient within rounding of zero could flip its update between 1 and 2 processes
    and the comparison would measure the CPU's rounding, not the distribution."""
    spec = tiny_spec(faces, deterministic=True, **{"optimizer": "sgd", "lr": 0.02, **train})
    spec["backbone"] = {"name": "tiny", "width": 8, "norm": "group"}
    spec["augment"] = {"flip": True, "translate": 0.1}
    return spec


def weighting_cases() -> list[tuple[str, dict[str, Any]]]:
    """Every registered weighting, in each gradient space its parameters accept."""
    cases = []
    for entry in load_components(make_plugin_manager(entry_points=False)).weightings:
        spaces: list[str | None] = []
        if entry.params is not None and "grad_space" in entry.params.model_fields:
            for space in ("features", "params"):
                try:
                    entry.params.model_validate({"grad_space": space})
                    spaces.append(space)
                except ValidationError:
                    pass
        for space in spaces or [None]:
            weighting = {"name": entry.name, **({"grad_space": space} if space else {}),
                         **EXTRA_PARAMS.get(entry.name, {})}
            cases.append((f"{entry.name}-{space or 'default'}", weighting))
    return cases


def torchrun(*args: str, nproc: int = 2, **popen: Any) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc-per-node={nproc}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **popen)


def hydranet_cli(*args: str, threads: str | None = "1", **popen: Any) -> subprocess.Popen:
    """`hydranet ARGS` as a user runs it; `threads=None` leaves OMP_NUM_THREADS unset, as in a fresh shell."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads}
    if threads is None:
        del env["OMP_NUM_THREADS"]
    return subprocess.Popen([sys.executable, "-m", "hydranet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **popen)


def succeed(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


#: What torchrun prints of its own that `hydranet train --nproc` must not show.
TORCHRUN_NOISE = ("Traceback", "ChildFailedError", "SignalException", "death signal", "closing signal",
                  "OMP_NUM_THREADS", "Root Cause")


def assert_no_torchrun_noise(output: str) -> None:
    for noise in TORCHRUN_NOISE:
        assert noise not in output, f"torchrun's {noise!r} in:\n{output}"


def one_process(spec: dict, out: Path) -> Trainer:
    trainer = Trainer(load_spec(spec), out_dir=out, progress=False, echo=False)
    trainer.run()
    return trainer


def assert_close_states(got: dict, want: dict, where: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert got.keys() == want.keys(), where
    for key, value in want.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(got[key], value, rtol=rtol, atol=atol, msg=lambda m: f"{where} {key}: {m}")


def assert_identical_states(got: dict, want: dict, where: str) -> None:
    assert got.keys() == want.keys(), where
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), f"{where}: {key} differs between the ranks"


@pytest.fixture(scope="module")
def every_weighting_on_two_processes(faces, tmp_path_factory):
    """One torchrun launch that trains every weighting case for two epochs on 2 ranks."""
    out = tmp_path_factory.mktemp("distributed")
    cases = [{"label": label, "spec": {**group_norm_spec(faces, epochs=2, batch_size=32), "weighting": weighting}}
             for label, weighting in weighting_cases()]
    (out / "cases.json").write_text(json.dumps(cases))
    succeed(torchrun(str(WORKER), str(out / "cases.json"), str(out)), timeout=600)
    return out, cases


def test_every_weighting_keeps_the_ranks_identical_and_matches_one_process(every_weighting_on_two_processes,
                                                                          tmp_path):
    out, cases = every_weighting_on_two_processes
    assert len(cases) >= 20  # every built-in strategy, gradient-based ones in both spaces
    mismatched = []
    for case in cases:
        label = case["label"]
        rank0 = torch.load(out / f"{label}.rank0.pt", weights_only=True)
        rank1 = torch.load(out / f"{label}.rank1.pt", weights_only=True)
        assert rank0["world_size"] == 2
        assert_identical_states(rank1["model"], rank0["model"], label)
        assert_identical_states(rank1["weighting"], rank0["weighting"], label)
        single = one_process(case["spec"], tmp_path / label)
        tolerance = (1e-3, 1e-4) if case["spec"]["weighting"]["name"] in SOLVER_TOLERANCE else (RTOL, ATOL)
        try:
            assert_close_states(rank0["model"], single.model.state_dict(), label, *tolerance)
            # last_weights only records the weights for the log; an iterative solver leaves them less
            # determined than the direction they give (MGDA's min-norm weights in a flat valley)
            learned = {k: v for k, v in single.weighting.state_dict().items() if k != "last_weights"}
            assert_close_states({k: rank0["weighting"][k] for k in learned}, learned, label, *tolerance)
        except AssertionError as error:
            mismatched.append(f"{label}: {error}")
    assert not mismatched, "2 processes differ from 1:\n" + "\n".join(mismatched)


def test_only_rank_zero_writes_the_run_folder(every_weighting_on_two_processes):
    out, cases = every_weighting_on_two_processes
    run = out / cases[0]["label"]
    assert (run / "last.pt").is_file() and (run / "metrics.csv").is_file()
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # a header and one row per epoch, not one per rank
    log = (run / "train.log").read_text()
    assert log.count("epoch 1/2") == 1
    assert "2 processes (gloo): parameters identical on every rank" in log


def test_nproc_from_the_cli_equals_one_process(faces, tmp_path):
    spec = group_norm_spec(faces, epochs=2, batch_size=32)
    spec["weighting"] = "uncertainty"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    output = succeed(hydranet_cli("train", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "two"),
                                  "--nproc", "2", "--no-progress"))
    assert output.count("validation metrics ") == 1  # rank 1 prints no second report
    assert "parameters identical on every rank" in output
    single = one_process(spec, tmp_path / "one")
    saved = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert_close_states(saved["model"], single.model.state_dict(), "--nproc 2")
    assert_close_states(saved["weighting"], single.weighting.state_dict(), "--nproc 2")


def start_two_process_run(faces: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, dict]:
    """`hydranet train --nproc 2` in a session of its own, once its first epoch is saved (6 epochs of small steps)."""
    spec = group_norm_spec(faces, epochs=6, batch_size=8, log_every=1)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    run = tmp_path / "run"
    process = hydranet_cli("train", str(tmp_path / "spec.yaml"), "--out", str(run), "--nproc", "2",
                           "--no-progress", threads=None, start_new_session=True)
    deadline = time.time() + 120
    while not (run / "last.pt").is_file():
        assert process.poll() is None, process.communicate()[0]
        assert time.time() < deadline, "the first epoch never finished"
        time.sleep(0.02)
    return process, run, spec


def processes_of(run: Path) -> list[int]:
    """Live processes whose command line names `run` (the launcher, torchrun, the workers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run).encode() in command:
            found.append(int(pid))
    return found


def test_ctrl_c_on_two_processes_saves_once_and_resumes_on_one(faces, tmp_path):
    process, run, spec = start_two_process_run(faces, tmp_path)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of its group
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, output
    assert output.count("Continue with: hydranet train --resume") == 1, output
    assert_no_torchrun_noise(output)
    progress = read_checkpoint(run / "last.pt")["progress"]
    assert (progress["epoch"], progress["step"]) > (1, 0) and progress["epoch"] <= spec["train"]["epochs"]
    succeed(hydranet_cli("train", "--resume", str(run), "--no-progress"))  # one process now
    single = one_process(spec, tmp_path / "one")
    saved = torch.load(run / "last.pt", weights_only=True)
    assert_close_states(saved["model"], single.model.state_dict(), "resumed on 1 of 2", rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="lists processes through /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_nproc_launcher_alone_reaches_the_workers_and_leaves_no_orphans(faces, tmp_path, signum):
    """`kill PID` (a scheduler's SIGTERM) or `kill -INT PID` of the launcher: the workers save and stop, and
    the launcher waits for them (it used to die of SIGTERM, leaving them running, and to swallow SIGINT)."""
    process, run, spec = start_two_process_run(faces, tmp_path)
    try:
        process.send_signal(signum)
        output, _ = process.communicate(timeout=120)
        assert processes_of(run) == [], f"left running after the launcher ended:\n{output}"
        assert process.returncode == 128 + signum, output
        assert output.count(f"stopped by {signal.Signals(signum).name} ") == 1, output  # at a step, or after validation
        assert output.count(f"Continue with: hydranet train --resume {run}") == 1, output
        assert_no_torchrun_noise(output)  # hydranet's own messages only
        progress = read_checkpoint(run / "last.pt")["progress"]
        assert (progress["epoch"], progress["step"]) > (1, 0) and progress["epoch"] <= spec["train"]["epochs"]
    finally:
        if process.poll() is None:
            process.kill()
        for pid in processes_of(run):
            os.kill(pid, signal.SIGKILL)


def test_a_second_ctrl_c_through_the_launcher_stops_the_workers_at_once(tmp_path):
    """Ctrl-C, then Ctrl-C again a moment later, to the launcher alone: torchrun passes the first on as SIGINT
    (finish, save, stop) and the second as SIGTERM, which the workers take as "stop at once"."""
    launcher = ("import sys; from hydranet.core.distributed import run_forwarding_signals; "
                "sys.exit(run_forwarding_signals(sys.argv[1:]))")
    process = subprocess.Popen([sys.executable, "-c", launcher, sys.executable, "-m", "hydranet.core.launch",
                                "--standalone", "--nproc-per-node=2", str(WORKER), "signals", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    logs = [tmp_path / f"rank{rank}.log" for rank in range(2)]

    def wait_until(condition, what: str) -> None:
        deadline = time.time() + 60
        while not condition():
            assert process.poll() is None, process.communicate()[0]
            assert time.time() < deadline, f"{what} never happened"
            time.sleep(0.02)

    try:
        wait_until(lambda: all(log.is_file() for log in logs), "the workers' start")
        process.send_signal(signal.SIGINT)
        wait_until(lambda: all("SIGINT received" in log.read_text() for log in logs), "the first Ctrl-C's arrival")
        time.sleep(interrupts.DOUBLE_SIGNAL_SECONDS + 0.2)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 128 + signal.SIGINT, output
        assert_no_torchrun_noise(output)
        for log in logs:
            assert log.read_text().splitlines()[1:] == [
                "SIGINT received: finishing this step, then saving and stopping (press Ctrl-C again to stop at "
                "once, without saving)", "stopped at once"], output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


#: A child that reports the signals it gets, for the launcher's forwarding alone (no torchrun).
SIGNAL_REPORTER = """
import signal, sys, time
def report(signum, frame):
    print(signal.Signals(signum).name, flush=True)
    if signum == signal.SIGINT:
        sys.exit(1)
for sig in (signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, report)
print("ready", flush=True)
time.sleep(60)
"""


def start_launcher_with_ignored(ignored: tuple[signal.Signals, ...]) -> subprocess.Popen:
    """`run_forwarding_signals` around `SIGNAL_REPORTER`, started with `ignored` ignored, as a non-interactive
    shell starts a background job (`hydranet train --nproc 2 ... &` in a script ignores SIGINT) or nohup SIGHUP."""
    launcher = ("import sys; from hydranet.core.distributed import run_forwarding_signals; "
                "sys.exit(run_forwarding_signals(sys.argv[1:]))")

    def ignore() -> None:
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)

    process = subprocess.Popen([sys.executable, "-c", launcher, sys.executable, "-c", SIGNAL_REPORTER],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ignore,
                               start_new_session=True)
    assert process.stdout.readline() == "ready\n", process.communicate()[0]
    return process


def test_the_nproc_launcher_passes_on_sigint_even_when_started_with_it_ignored():
    """`kill -INT PID` of a background `hydranet train --nproc` from a script: the shell started it with SIGINT
    ignored, and one process takes SIGINT anyway, so the launcher passes it on too (it used to swallow it)."""
    process = start_launcher_with_ignored((signal.SIGINT,))
    try:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        assert output.split() == ["SIGINT"], output
        assert process.returncode == 128 + signal.SIGINT, output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_nproc_launcher_leaves_an_ignored_sighup_ignored():
    """Under nohup a hangup must not stop the run, with --nproc as with one process."""
    process = start_launcher_with_ignored((signal.SIGINT, signal.SIGHUP))
    try:
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        assert output.split() == ["SIGINT"], output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_nproc_launcher_refuses_a_batch_that_does_not_split_before_starting_processes(faces, tmp_path,
                                                                                      monkeypatch):
    def no_launch(*args, **kwargs):
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(subprocess, "Popen", no_launch)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(group_norm_spec(faces, epochs=1, batch_size=8)))
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "spec.yaml"), "--nproc", "3",
                                      "--set", "train.batch_size=31", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert ("train.batch_size = 31 is the global batch (all processes together) and must divide by the 3 "
            "processes; use 30 or 33 (--set train.batch_size=N), or a number of processes that divides 31"
            ) in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_train_nproc_holds_a_cpu_run_on_a_gpu_machine_to_no_gpu_count(faces, tmp_path, monkeypatch):
    """`hydranet train --nproc 2` with train.device cpu on a one-GPU machine starts its two gloo processes."""
    from hydranet.core import distributed

    launched: list[list[str]] = []
    monkeypatch.setattr(distributed, "run_forwarding_signals", lambda command, env=None: launched.append(command) or 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(group_norm_spec(faces, epochs=1, batch_size=8)))
    args = ["train", str(tmp_path / "spec.yaml"), "--nproc", "2", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, [*args, "--set", "train.device=cpu"])
    assert result.exit_code == 0 and len(launched) == 1, result.output
    result = CliRunner().invoke(cli, [*args, "--set", "train.device=cuda"])
    assert result.exit_code == 1 and len(launched) == 1
    assert "--nproc 2 asks for more processes than this machine's 1 GPU" in result.output


def test_a_global_batch_that_does_not_split_evenly_is_refused_with_a_fix():
    with pytest.raises(DistributedError, match=r"train.batch_size = 30 .* 4 processes; use 28 or 32 "):
        Distributed(rank=0, world_size=4).check_batch_size(30)
    with pytest.raises(DistributedError, match=r"train.batch_size = 1 .* 2 processes; use 2 \(--set"):
        Distributed(rank=0, world_size=2).check_batch_size(1)  # not "use 2 or 2"


class FakeTrainer:
    """What `interrupt_requests` reads and writes of a Trainer."""

    def __init__(self):
        self.stop_signal, self.stop_requested_at, self.validating = None, 0.0, False
        self.dist = Distributed.single()
        self.lines: list[str] = []
        self.run_folder = self

    def log(self, line: str) -> None:
        self.lines.append(line)


@pytest.mark.parametrize("first, then, stops_at_once", [
    (signal.SIGINT, signal.SIGINT, True),     # a second Ctrl-C
    (signal.SIGINT, signal.SIGTERM, True),    # a second Ctrl-C, as torchrun passes it on
    (signal.SIGTERM, signal.SIGINT, True),    # Ctrl-C after a scheduler's SIGTERM
    (signal.SIGTERM, signal.SIGTERM, False),  # a scheduler repeating itself: still save and stop
])
def test_a_second_request_a_moment_later_stops_at_once_unless_both_are_sigterm(monkeypatch, first, then,
                                                                                stops_at_once):
    now = [100.0]
    monkeypatch.setattr(interrupts.time, "monotonic", lambda: now[0])
    trainer = FakeTrainer()
    with interrupts.interrupt_requests(trainer):
        signal.getsignal(first)(first, None)
        assert trainer.stop_signal == first and "received: finishing this step" in trainer.lines[0]
        signal.getsignal(then)(then, None)  # at once: the same request (a Ctrl-C seen twice)
        now[0] += interrupts.DOUBLE_SIGNAL_SECONDS + 0.1
        if stops_at_once:
            with pytest.raises(KeyboardInterrupt):
                signal.getsignal(then)(then, None)
        else:
            signal.getsignal(then)(then, None)
    assert trainer.stop_signal == first and len(trainer.lines) == 1


def test_ranks_take_disjoint_shares_of_every_global_batch():
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    shares = [order[:40].view(5, 8)[:, Distributed(rank=r, world_size=2).local_rows(8)].reshape(-1)
              for r in range(2)]
    assert set(shares[0].tolist()).isdisjoint(shares[1].tolist())
    assert sorted(torch.cat(shares).tolist()) == list(range(40))
    # step t of rank r holds rows [4r, 4r+4) of global batch t
    assert shares[1][:4].tolist() == order[4:8].tolist() and shares[0][4:8].tolist() == order[8:12].tolist()


def test_one_process_needs_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    single = Distributed.from_environment()
    assert not single.active and single.is_main
    losses = torch.tensor([1.0, 2.0])
    assert single.share_losses(losses, torch.zeros(3, 2)) is losses


def test_the_nproc_launcher_gives_workers_time_to_save_unless_the_user_chose(monkeypatch):
    """torchrun kills workers 30 s after a signal by default: too short for a stop at the next log interval."""
    from hydranet.core import distributed

    seen: list[dict] = []
    monkeypatch.setattr(distributed, "run_forwarding_signals", lambda command, env=None: seen.append(env) or 0)
    monkeypatch.delenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", raising=False)
    assert distributed.launch_local(1, ["train"]) == 0
    assert seen[-1]["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == str(distributed.SHUTDOWN_SECONDS)
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "45")
    distributed.launch_local(1, ["train"])
    assert seen[-1]["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "45"


def test_a_failure_on_every_rank_prints_one_error_and_no_torchrun_traceback(faces, tmp_path):
    """Every rank fails alike (a missing data folder): one message, the worker's status, nothing of torchrun's
    (no ChildFailedError traceback or table, no OMP_NUM_THREADS banner when the user set none)."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(group_norm_spec(faces, epochs=1, batch_size=8)))
    process = hydranet_cli("train", str(tmp_path / "spec.yaml"), "--nproc", "2", "--set", "data.root=nope",
                           "--out", str(tmp_path / "run"), threads=None)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    assert output.count("UTKFace folder nope does not exist") == 1, output
    assert output.strip().startswith("Error: UTKFace folder nope does not exist"), output
    assert_no_torchrun_noise(output)


@pytest.fixture
def rank(monkeypatch, tmp_path):
    """This process as rank N of a 2-process launch by `hydranet.core.launch` (its errors folder in tmp_path)."""
    from hydranet.core import launch

    monkeypatch.setattr(launch, "WAIT_FOR_RANK_ZERO_SECONDS", 0.2)
    monkeypatch.setenv(launch.ERRORS_VARIABLE, str(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")

    def become(number: int) -> None:
        monkeypatch.setenv("RANK", str(number))
    return become


def test_another_rank_is_silent_about_the_error_rank_zero_printed_and_names_itself_for_its_own(rank):
    import click

    from hydranet.core.cli import HydranetGroup

    group = HydranetGroup("hydranet")
    group._plugins_added = True  # this group's one command is enough

    @group.command()
    @click.argument("message")
    def fail(message: str) -> None:
        raise DistributedError(message)

    def output_of(message: str) -> tuple[int, str]:
        result = CliRunner().invoke(group, ["fail", message])
        return result.exit_code, result.output

    rank(0)
    assert output_of("no data") == (1, "Error: no data\n")
    rank(1)
    assert output_of("no data") == (1, "")  # what rank 0 printed: not again
    assert output_of("no GPU here") == (1, "[rank 1] Error: no GPU here\n")


def test_without_the_launcher_other_ranks_name_themselves(monkeypatch):
    from hydranet.core import launch

    monkeypatch.delenv(launch.ERRORS_VARIABLE, raising=False)  # a plain torchrun
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert launch.error_prefix("no data") == "[rank 1] "
    monkeypatch.setenv("RANK", "0")
    assert launch.error_prefix("no data") == ""
    monkeypatch.delenv("RANK")
    assert launch.error_prefix("no data") == ""


def test_a_worker_killed_by_a_signal_ends_the_launch_with_128_plus_n_and_is_named(capsys):
    from types import SimpleNamespace

    from hydranet.core.launch import exit_status

    killed = SimpleNamespace(get_first_failure=lambda: (1, SimpleNamespace(exitcode=-9, pid=77)))
    assert exit_status(killed) == 137
    assert "rank 1 (pid 77) was killed by SIGKILL" in capsys.readouterr().err
    failed = SimpleNamespace(get_first_failure=lambda: (0, SimpleNamespace(exitcode=3, pid=78)))
    assert exit_status(failed) == 3 and capsys.readouterr().err == ""  # the worker said why itself


def test_the_nproc_launcher_gives_workers_a_share_of_the_cores_unless_the_user_chose(monkeypatch):
    """torchrun would set OMP_NUM_THREADS=1, with a banner saying so; the launcher sets a share instead."""
    from hydranet.core import distributed

    seen: list[tuple[list, dict]] = []
    monkeypatch.setattr(distributed, "run_forwarding_signals",
                        lambda command, env=None: seen.append((command, env)) or 0)
    monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    distributed.launch_local(2, ["train"])
    command, env = seen[-1]
    assert command[1:3] == ["-m", "hydranet.core.launch"] and env["OMP_NUM_THREADS"] == "4"
    assert distributed.worker_threads(3) == 2 and distributed.worker_threads(16) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    distributed.launch_local(2, ["train"])
    assert seen[-1][1]["OMP_NUM_THREADS"] == "6"


def test_nproc_beyond_the_gpus_is_refused_for_a_gpu_run_only(monkeypatch):
    """A machine with one GPU can still run two CPU (gloo) processes; two GPU processes it cannot."""
    from hydranet.core import distributed

    launched: list[list[str]] = []
    monkeypatch.setattr(distributed, "run_forwarding_signals", lambda command, env=None: launched.append(command) or 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed.launch_local(2, ["train"], device="cpu") == 0
    assert "--nproc-per-node=2" in launched[-1]
    for device in ("cuda", "cuda:0", "auto", torch.device("cuda")):
        with pytest.raises(DistributedError, match="--nproc 2 asks for more processes than this machine's 1 GPU"):
            distributed.launch_local(2, ["train"], device=device)
    assert len(launched) == 1
    assert distributed.launch_local(1, ["train"], device="cuda") == 0


@pytest.fixture
def torchrun_worker(monkeypatch):
    """This process as a torchrun worker on a machine with 2 (pretend) GPUs; what it asked torch for, recorded."""
    calls: dict[str, Any] = {"set_device": [], "init_process_group": []}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", calls["set_device"].append)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **options: calls["init_process_group"].append(backend))
    monkeypatch.setattr(torch.distributed, "get_backend", lambda: calls["init_process_group"][-1])
    return calls


def test_a_gpu_worker_takes_nccl_and_its_local_rank_s_gpu(torchrun_worker, monkeypatch):
    worker = Distributed.from_environment("auto")
    assert (worker.rank, worker.local_rank, worker.world_size) == (1, 1, 2)
    assert worker.backend == "nccl" and worker.owns_group and not worker.is_main
    assert torchrun_worker == {"set_device": [1], "init_process_group": ["nccl"]}
    assert worker.device(torch.device("cuda")) == torch.device("cuda", 1)
    cpu = Distributed.from_environment("cpu")  # CPU processes on a GPU machine: gloo, no GPU chosen
    assert cpu.backend == "gloo" and torchrun_worker["set_device"] == [1]
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(DistributedError, match="local rank 2 has no GPU: this machine has 2"):
        Distributed.from_environment("cuda")
    assert torchrun_worker["set_device"] == [1]  # refused before it chose one


def test_two_processes_score_the_test_split_as_one_process_evaluates_best_pt(faces, tmp_path):
    # each rank scores its share of the held-out test images and the sums are all-reduced, as for validation:
    # the summary's test metrics must be those of best.pt evaluated on the whole test split in one process
    spec = group_norm_spec(faces, epochs=1, batch_size=32)
    spec["data"]["test_fraction"] = 0.2
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    succeed(hydranet_cli("train", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "two"), "--nproc", "2",
                         "--no-progress"))
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["test_epoch"] == 1 and set(summary["test"]) == {"age", "gender", "ethnicity"}
    from hydranet.core.inference import TrainedModel

    scored = TrainedModel.from_checkpoint(tmp_path / "two" / "best.pt").evaluate(split="test", details=False)
    for task, metrics in summary["test"].items():
        assert metrics == pytest.approx(scored.result.metrics[task], rel=1e-5, abs=1e-6), task
