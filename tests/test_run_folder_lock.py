"""One run writes a run folder at a time: a second `train --out RUN` or `--resume RUN` is refused while it runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec
from hydranet.core import run_setup
from hydranet.core.cli import cli
from hydranet.core.engine import Trainer
from hydranet.core.run import LOCK_FILE, RUN_FILES
from hydranet.core.spec import load_spec

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the lock's holder is stopped with POSIX signals here")


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/'run', as a training run there would; stopped afterwards."""
    folder = tmp_path / "run"
    folder.mkdir()
    code = textwrap.dedent(f"""
        import sys, time
        from hydranet.core.run import RunLock
        lock = RunLock({str(folder)!r})
        print("locked", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield folder, process
    if process.poll() is None:
        process.kill()
    process.wait()


def no_data_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data loaded for a run that should have been refused")

    monkeypatch.setattr(run_setup, "load_prepared_data", refuse)  # where Trainer._setup looks it up


def test_a_run_folder_in_use_is_refused_before_anything_loads(faces, tmp_path, components, holder, monkeypatch):
    folder, process = holder
    before = files(folder)
    no_data_loads(monkeypatch)
    spec = load_spec(tiny_spec(faces, epochs=1), components=components)
    # when the holder took the lock: it writes it after it starts, so the clock may have turned a minute since
    expected = f"{folder} is in use by another hydranet run (PID {process.pid}, started "
    started = re.compile(re.escape(expected) + r"\d\d:\d\d:\d\d\)")
    stop = f"; wait for it to finish or stop it (kill -INT {process.pid})"
    for call in (lambda: hydranet.train(spec, out_dir=folder, components=components, progress=False, echo=False),
                 lambda: hydranet.train(components=components, resume=folder, progress=False, echo=False),
                 lambda: hydranet.train(components=components, resume=folder / "last.pt", progress=False,
                                        echo=False)):
        with pytest.raises(hydranet.HydranetError) as caught:
            call()
        assert started.match(str(caught.value)) and str(caught.value).endswith(stop), str(caught.value)
    for args in (["train", "--out", str(folder)], ["train", "--resume", str(folder)],
                 ["train", "--resume", str(folder), "--nproc", "2"]):  # the launcher refuses: no torchrun
        result = CliRunner().invoke(cli, [*args, "--no-progress"])
        said = result.output.partition("Error: ")[2]
        assert result.exit_code == 1 and started.match(said) and stop in result.output, result.output
    assert files(folder) == before  # nothing written, nothing cleared


def test_the_lock_dies_with_its_holder_and_a_new_run_takes_the_folder(faces, tmp_path, components, holder):
    folder, process = holder
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (folder / LOCK_FILE).exists()  # a killed run cannot tidy up: its file stays, its lock does not
    spec = load_spec(tiny_spec(faces, epochs=1), components=components)
    hydranet.train(spec, out_dir=folder, components=components, progress=False, echo=False)
    assert not (folder / LOCK_FILE).exists() and (folder / "best.pt").exists()  # a finished run leaves no lock
    assert LOCK_FILE not in RUN_FILES


def test_a_training_run_holds_its_folder_until_it_ends(faces, tmp_path, components, monkeypatch):
    """While the run trains, a second run there (in another process or this one) is refused; afterwards not."""
    run = tmp_path / "run"
    spec = load_spec(tiny_spec(faces, epochs=2), components=components)
    refusals = []
    original = Trainer._save

    def second_run_during_the_first(self, epoch, row, *, best):
        original(self, epoch, row, best=best)
        if epoch == 1:
            for kwargs in ({"resume": run}, {"spec": spec, "out_dir": run}):
                with pytest.raises(hydranet.HydranetError) as caught:
                    hydranet.train(components=components, progress=False, echo=False, **kwargs)
                refusals.append(str(caught.value))
            other = subprocess.run([sys.executable, "-m", "hydranet", "train", "--resume", str(run), "--no-progress"],
                                   capture_output=True, text=True, timeout=120)
            refusals.append(other.stderr)
            assert other.returncode == 1

    monkeypatch.setattr(Trainer, "_save", second_run_during_the_first)
    hydranet.train(spec, out_dir=run, components=components, progress=False, echo=False)
    assert len(refusals) == 3
    assert all(f"{run} is in use by another hydranet run (PID {os.getpid()}, started " in r for r in refusals), refusals
    assert [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2"]
    assert not (run / LOCK_FILE).exists()
    monkeypatch.setattr(Trainer, "_save", original)
    with pytest.raises(hydranet.HydranetError, match="nothing left to train"):  # free again: refused for another reason
        hydranet.train(components=components, resume=run, progress=False, echo=False)


def test_a_failed_start_leaves_no_lock_file(faces, tmp_path, components):
    raw = tiny_spec(faces)
    raw["data"]["root"] = str(tmp_path / "no-such-faces")
    (tmp_path / "mine").mkdir()
    with pytest.raises(hydranet.HydranetError, match="no-such-faces"):
        hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "mine", components=components,
                       progress=False, echo=False)
    assert list((tmp_path / "mine").iterdir()) == []


def test_any_failure_to_open_the_run_folder_on_rank_zero_reaches_the_other_ranks(tmp_path, monkeypatch):
    """An OSError (or anything not a HydranetError) on rank 0 used to skip the broadcast the others wait in."""
    from types import SimpleNamespace

    import pytest

    from hydranet.core import run_setup

    sent = []
    dist = SimpleNamespace(active=True, is_main=True, broadcast_object=lambda value: sent.append(value) or value)
    trainer = SimpleNamespace(dist=dist, resume_state=None, option="--set",
                              spec=SimpleNamespace(source=None, task_names=["age"]))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(run_setup, "RunFolder", refuse)
    with pytest.raises(PermissionError):
        run_setup.RunSetup._open_run_folder(trainer, tmp_path / "run", echo=False)
    assert sent == [(str(tmp_path / "run"), "PermissionError: [Errno 13] Permission denied")]
