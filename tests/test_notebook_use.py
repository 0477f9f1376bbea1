"""`hydranet.train` called again and again in one process, as from a notebook, with echo=False.

What a notebook found: a run reseeded the caller's torch generator; a KeyboardInterrupt that no Ctrl-C sent
was called "a second Ctrl-C"; warnings reached only train.log; the result's repr printed the whole history;
a resumed run's history mixed float and int epochs; a wrong `spec` and a taken run folder raised errors no
`except` could pick out. Each test trains the tiny backbone at 16 px for an epoch or two.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

import hydranet
from conftest import tiny_spec
from hydranet import HydranetError, InputError
from hydranet.core.engine import RunResult
from hydranet.core.errors import RunFolderError, TrainingError, TrainingInterrupted
from hydranet.core.interrupts import StoppedAtOnce
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.run import RunFolder


def observed_by(name: str, observer: object):
    """The built-in components plus `observer` as a plugin of that name."""
    pm = make_plugin_manager(entry_points=False)
    assert pm.add_plugin(observer, name, distribution=f"hydranet-{name}", version="0.1", builtin=False)
    return load_components(pm)


def train(faces: Path, out: Path, components=None, weighting: str = "sum", **settings) -> RunResult:
    raw = tiny_spec(faces, **settings)
    raw["weighting"] = weighting
    return hydranet.train(raw, out_dir=out, components=components, progress=False, echo=False)


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in history]


# ---------------------------------------------------------------- 1. the caller's random generators

def test_a_run_leaves_the_callers_torch_random_numbers_as_they_were(faces, tmp_path):
    torch.manual_seed(123)
    torch.rand(3)
    expected = torch.rand(5)
    torch.manual_seed(123)
    torch.rand(3)
    first = train(faces, tmp_path / "one", epochs=1, seed=0)
    assert torch.initial_seed() == 123  # the run's seed 0 stayed in the run
    assert torch.equal(torch.rand(5), expected)
    # and the run itself is as reproducible as before: its own seed, not the caller's state, decides it
    torch.manual_seed(999)
    second = train(faces, tmp_path / "two", epochs=1, seed=0)
    assert without_timings(second.history) == without_timings(first.history)


def test_a_failed_run_leaves_the_callers_random_numbers_as_they_were_too(faces, tmp_path):
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    with pytest.raises(TrainingError, match="non-finite loss"):  # set up, seeded, then stopped by the loss
        train(faces, tmp_path / "run", epochs=1, seed=0, lr=float("inf"))
    assert torch.equal(torch.rand(4), expected)


@pytest.fixture
def deterministic_switches_restored(monkeypatch):
    """Whatever a test leaves switched on, the next test starts from torch's defaults (and the caller's env)."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_a_deterministic_run_leaves_the_callers_deterministic_switches_as_they_were(
        faces, tmp_path, deterministic_switches_restored):
    train(faces, tmp_path / "det", epochs=1, seed=0, deterministic=True)
    assert not torch.are_deterministic_algorithms_enabled()  # the next cell's own code may use any algorithm
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    # and a caller's own setting survives a run that asks for the same
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    torch.use_deterministic_algorithms(True)  # erroring, not warn_only
    with pytest.raises(TrainingError, match="non-finite loss"):
        train(faces, tmp_path / "failed", epochs=1, seed=0, deterministic=True, lr=float("inf"))
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


# ---------------------------------------------------------------- 2. KeyboardInterrupt that no Ctrl-C sent

class RaisesKeyboardInterrupt:
    @hydranet.hookimpl
    def epoch_finished(self):
        raise KeyboardInterrupt  # as a notebook's own code, or a signal.alarm handler, would


def test_a_keyboard_interrupt_no_ctrl_c_sent_is_not_called_a_second_ctrl_c(faces, tmp_path):
    with pytest.raises(StoppedAtOnce) as caught:
        train(faces, tmp_path / "run", observed_by("impatient", RaisesKeyboardInterrupt()), epochs=2)
    message = str(caught.value)
    assert "Ctrl-C" not in message
    assert message.startswith("interrupted (KeyboardInterrupt) during epoch 1's validation, without saving its "
                              "progress. Kept: "), message
    assert isinstance(caught.value.__cause__, KeyboardInterrupt)  # where it came from, for the traceback
    assert message in (tmp_path / "run" / "train.log").read_text(encoding="utf-8")


# ---------------------------------------------------------------- 3. warnings with echo=False

class RaisesInEpochFinished:
    @hydranet.hookimpl
    def epoch_finished(self):
        raise ValueError("the dashboard is down")


def test_the_runs_warnings_reach_the_result_with_echo_off(faces, tmp_path):
    result = train(faces, tmp_path / "run", observed_by("dashboard", RaisesInEpochFinished()), weighting="dwa",
                   epochs=1)
    dwa = [note for note in result.notes if note.startswith("warning: weighting 'dwa' weights every task 1")]
    observer = [note for note in result.notes if "observer hook epoch_finished raised ValueError" in note]
    assert len(dwa) == 1 and "trains exactly as weighting 'sum' would" in dwa[0], result.notes
    assert len(observer) == 1 and observer[0].startswith("warning:"), result.notes
    log = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    assert all(line in log for line in dwa + observer)


def test_the_run_folder_keeps_each_warning_it_logs_and_no_other_line(tmp_path):
    folder = RunFolder(tmp_path / "run", echo=False, fresh=True)
    try:
        folder.log("data: 3 images")
        folder.log("warning: one")
        folder.log("a line that mentions a warning: not one")
        folder.log("warning: two", console=False)
    finally:
        folder.close()
    assert folder.warnings == ["warning: one", "warning: two"]


# ---------------------------------------------------------------- 4. the result's repr

def test_the_results_repr_is_short_and_names_the_best_epoch(faces, tmp_path):
    result = train(faces, tmp_path / "run", epochs=2)
    text = repr(result)
    assert text.startswith(f"RunResult(run_dir={str(tmp_path / 'run')!r}, epochs=2, best_epoch={result.best_epoch}, "
                           "best={'age': {'mae': "), text
    assert len(text) < 400 and "history" not in text
    mae = result.best["age"]["mae"]
    assert f"'mae': {float(f'{mae:.4g}')!r}" in text


# ---------------------------------------------------------------- 5. a resumed run's history

class StopAfterEpochOne:
    @hydranet.hookimpl
    def epoch_finished(self, epoch):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # save and stop, as a scheduler's SIGTERM would


def test_a_resumed_runs_history_has_int_epochs_on_every_row(faces, tmp_path):
    with pytest.raises(TrainingInterrupted):
        train(faces, tmp_path / "run", observed_by("stopper", StopAfterEpochOne()), epochs=2)
    result = hydranet.train(resume=tmp_path / "run", progress=False, echo=False)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert all(type(row["epoch"]) is int for row in result.history)


# ---------------------------------------------------------------- 6. error types

@pytest.mark.parametrize("spec", [42, b"demo.yaml", 1.5])
def test_a_spec_train_cannot_read_is_an_input_error_naming_spec(spec, tmp_path):
    with pytest.raises(InputError) as caught:
        hydranet.train(spec, out_dir=tmp_path / "run", progress=False, echo=False)
    assert isinstance(caught.value, TypeError)
    assert str(caught.value) == (f"spec must be a spec file path, a built-in spec name (e.g. 'demo'), a dict, or a "
                                 f"ResolvedSpec; got {type(spec).__name__} {spec!r}")
    assert not (tmp_path / "run").exists()


def test_load_spec_takes_a_resolved_spec_as_train_does(faces):
    resolved = hydranet.load_spec(tiny_spec(faces))
    again = hydranet.load_spec(resolved, "train.epochs=5")
    assert again.spec.train.epochs == 5 and again.to_dict()["data"] == resolved.to_dict()["data"]


def test_a_folder_that_holds_a_run_is_refused_with_its_own_error_class(faces, tmp_path):
    train(faces, tmp_path / "run", epochs=1)
    with pytest.raises(RunFolderError) as caught:
        train(faces, tmp_path / "run", epochs=1)
    assert isinstance(caught.value, HydranetError)
    assert str(caught.value).startswith(f"{tmp_path / 'run'} holds a finished run (finished its 1 epoch; ")
