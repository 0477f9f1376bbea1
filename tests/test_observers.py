"""Run observers: plugins told when a run starts, when each epoch is written and how the run ended.

Each run here is the tiny backbone on 16 px faces, one or two epochs: a second
or two on a CPU. The observers are inline plugins on a fresh manager, added as
an installed package's would be.
"""

from __future__ import annotations

import csv
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import hydranet
from conftest import tiny_spec, with_inline_plugin
from hydranet.core import engine
from hydranet.core import plugins as plugins_module
from hydranet.core.errors import TrainingError, TrainingInterrupted
from hydranet.core.observers import OBSERVER_HOOKS, RunInfo, observer_callers
from hydranet.core.plugins import HOOKS, load_components, make_plugin_manager
from hydranet.core.run import csv_number

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """An observer that keeps every call it gets, as (hook, arguments)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hydranet.hookimpl
    def run_started(self, run):
        self.calls.append(("run_started", {"run": run}))

    @hydranet.hookimpl
    def epoch_finished(self, run, epoch, metrics):
        self.calls.append(("epoch_finished", {"run": run, "epoch": epoch, "metrics": metrics}))

    @hydranet.hookimpl
    def run_finished(self, run, status, message):
        self.calls.append(("run_finished", {"run": run, "status": status, "message": message}))

    def hooks(self) -> list[tuple[str, Any]]:
        """Each call as (hook, epoch or status)."""
        return [(hook, args.get("epoch", args.get("status"))) for hook, args in self.calls]


class Raising(Recorder):
    """A recorder whose `broken` hook raises every time."""

    def __init__(self, broken: str) -> None:
        super().__init__()
        self.broken = broken

    def _maybe_raise(self, hook: str) -> None:
        if hook == self.broken:
            raise ValueError(f"{hook} is broken")

    @hydranet.hookimpl
    def run_started(self, run):
        super().run_started(run)
        self._maybe_raise("run_started")

    @hydranet.hookimpl
    def epoch_finished(self, run, epoch, metrics):
        super().epoch_finished(run, epoch, metrics)
        self._maybe_raise("epoch_finished")

    @hydranet.hookimpl
    def run_finished(self, run, status, message):
        super().run_finished(run, status, message)
        self._maybe_raise("run_finished")


def observed_by(**observers: object):
    """The built-in components plus each observer as a plugin of that name (distribution hydranet-NAME 0.1)."""
    pm = make_plugin_manager(entry_points=False)
    for name, observer in observers.items():
        assert pm.add_plugin(observer, name, distribution=f"hydranet-{name}", version="0.1", builtin=False)
    assert pm.load_errors() == []
    return load_components(pm)


def train(faces: Path, out: Path, components, echo: bool = False, **settings):
    return hydranet.train(tiny_spec(faces, **settings), out_dir=out, components=components, progress=False,
                          echo=echo)


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def without_timings(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]


# ---------------------------------------------------------------- what observers are told


def test_hooks_are_called_in_order_with_the_numbers_of_metrics_csv(faces, tmp_path):
    recorder = Recorder()
    components = observed_by(recorder=recorder)
    result = train(faces, tmp_path / "run", components, epochs=2)

    assert recorder.hooks() == [("run_started", None), ("epoch_finished", 1), ("epoch_finished", 2),
                                ("run_finished", "finished")]
    run = recorder.calls[0][1]["run"]
    assert all(args["run"] is run for _, args in recorder.calls)  # one RunInfo for the whole run
    assert isinstance(run, hydranet.RunInfo) and hydranet.RunInfo is RunInfo
    assert (run.run_dir, run.name, run.tasks, run.epochs) == (result.run_dir, "run", ("age", "gender", "ethnicity"), 2)
    assert (run.device, run.world_size, run.rank, run.resumed_from) == ("cpu", 1, 0, None)
    assert run.version == hydranet.__version__
    assert run.spec["backbone"]["name"] == "tiny" and run.spec["train"]["epochs"] == 2  # resolved: defaults in
    assert run.spec == hydranet.load_spec(tiny_spec(faces, epochs=2)).to_dict()
    with pytest.raises(AttributeError):
        run.epochs = 3  # frozen

    # exactly metrics.csv's rows, as written (9 significant digits), less the epoch column
    for (_, args), row in zip(recorder.calls[1:3], csv_rows(result.run_dir)):
        metrics = args["metrics"]
        assert "epoch" not in metrics and int(row.pop("epoch")) == args["epoch"]
        assert {k: str(csv_number(v)) for k, v in metrics.items()} == row
        with pytest.raises(TypeError):
            metrics["lr"] = 1.0  # read-only: the row is the run's own
    assert set(recorder.calls[1][1]["metrics"]) >= {"train_loss.age", "val_loss.gender", "val.age.mae",
                                                    "weight.ethnicity", "lr", "train_seconds", "val_seconds"}


def test_an_observer_may_take_only_the_arguments_it_needs_and_skip_hooks(faces, tmp_path):
    ends = []

    class EndOnly:
        @hydranet.hookimpl
        def run_finished(self, status):
            ends.append(status)

    components = observed_by(ending=EndOnly())
    assert components.pm.info["ending"].components == {"observes": ["run_finished"]}
    train(faces, tmp_path / "run", components, epochs=1)
    assert ends == ["finished"]


def test_the_run_has_ended_and_its_files_are_written_when_observers_hear_of_it(faces, tmp_path):
    seen = {}

    class Reader:
        @hydranet.hookimpl
        def epoch_finished(self, run, epoch):
            seen[epoch] = (len(csv_rows(run.run_dir)), (run.run_dir / "last.pt").exists())

        @hydranet.hookimpl
        def run_finished(self, run):
            seen["end"] = (run.run_dir / "summary.json").exists()

    train(faces, tmp_path / "run", observed_by(reader=Reader()), epochs=2)
    assert seen == {1: (1, True), 2: (2, True), "end": True}


# ---------------------------------------------------------------- how runs end


def interrupted_after_epoch_one(faces: Path, out: Path, components, monkeypatch) -> TrainingInterrupted:
    """A 2-epoch run that gets Ctrl-C during epoch 1's validation: it saves epoch 1 and stops."""
    real_evaluate, calls = engine.evaluate, []

    def ctrl_c_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # finish the validation, save and stop
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", ctrl_c_once)
    with pytest.raises(TrainingInterrupted) as caught:
        train(faces, out, components, epochs=2)
    monkeypatch.setattr(engine, "evaluate", real_evaluate)
    return caught.value


def test_an_interrupted_run_reports_interrupted_and_its_resume_only_the_new_epochs(faces, tmp_path, monkeypatch):
    recorder = Recorder()
    components = observed_by(recorder=recorder)
    stopped = interrupted_after_epoch_one(faces, tmp_path / "run", components, monkeypatch)
    assert recorder.hooks() == [("run_started", None), ("epoch_finished", 1), ("run_finished", "interrupted")]
    message = recorder.calls[-1][1]["message"]
    assert message == str(stopped) and message.startswith("stopped by SIGINT after epoch 1 and its validation")

    recorder.calls.clear()
    hydranet.train(resume=tmp_path / "run", components=components, progress=False, echo=False)
    assert recorder.hooks() == [("run_started", None), ("epoch_finished", 2), ("run_finished", "finished")]
    run = recorder.calls[0][1]["run"]
    assert (run.resumed_from, run.epochs, run.run_dir) == (2, 2, tmp_path / "run")
    assert recorder.calls[1][1]["metrics"]["train_loss.age"] == pytest.approx(
        float(csv_rows(tmp_path / "run")[1]["train_loss.age"]), rel=1e-7)


def test_a_non_finite_stop_reports_nonfinite_with_the_error(faces, tmp_path):
    recorder = Recorder()
    with pytest.raises(TrainingError) as caught:
        train(faces, tmp_path / "run", observed_by(recorder=recorder), epochs=2, lr=1e12)
    hook, args = recorder.calls[-1]
    assert (hook, args["status"], args["message"]) == ("run_finished", "nonfinite", str(caught.value))
    assert "non-finite loss for task" in args["message"]
    assert recorder.hooks()[0] == ("run_started", None) and len(recorder.calls) <= 4


def test_a_failing_run_reports_failed_with_the_error_and_the_error_goes_on(faces, tmp_path, monkeypatch):
    recorder = Recorder()
    real_evaluate, calls = engine.evaluate, []

    def fails_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the disk caught fire")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", fails_in_epoch_two)
    with pytest.raises(RuntimeError, match="the disk caught fire"):
        train(faces, tmp_path / "run", observed_by(recorder=recorder), epochs=2)
    assert recorder.hooks() == [("run_started", None), ("epoch_finished", 1), ("run_finished", "failed")]
    assert recorder.calls[-1][1]["message"] == "RuntimeError: the disk caught fire"


def test_a_run_that_fails_while_setting_up_calls_no_observer(tmp_path):
    recorder = Recorder()
    components = observed_by(recorder=recorder)
    with pytest.raises(hydranet.HydranetError):
        train(tmp_path / "no-such-folder", tmp_path / "run", components, epochs=1)
    assert recorder.calls == []  # it never started: no run_started, so no run_finished either


# ---------------------------------------------------------------- an observer cannot lose the run


def test_an_observer_that_raises_is_named_once_and_the_run_is_the_same(faces, tmp_path, capsys):
    plain = train(faces, tmp_path / "plain", observed_by(), epochs=2, deterministic=True)
    broken, healthy = Raising("epoch_finished"), Recorder()
    observed = train(faces, tmp_path / "observed", observed_by(broken=broken, healthy=healthy), echo=True, epochs=2,
                     deterministic=True)

    warning = ("warning: plugin 'broken' (hydranet-broken 0.1): its observer hook epoch_finished raised ValueError: "
               "epoch_finished is broken; hydranet does not call its epoch_finished again in this run (it still "
               "gets run_finished); the run goes on")
    log = (observed.run_dir / "train.log").read_text(encoding="utf-8")
    assert log.count(warning) == 1 and "Traceback" in log  # the traceback too, for the observer's author
    assert capsys.readouterr().err.count(warning) == 1  # on the console as well, without the traceback
    assert broken.hooks() == [("run_started", None), ("epoch_finished", 1), ("run_finished", "finished")]
    assert healthy.hooks() == [("run_started", None), ("epoch_finished", 1), ("epoch_finished", 2),
                               ("run_finished", "finished")]  # the other observer hears of everything
    assert without_timings(csv_rows(observed.run_dir)) == without_timings(csv_rows(plain.run_dir))
    assert observed.best_epoch == plain.best_epoch


def test_an_observer_whose_run_started_raises_does_not_observe_the_run(faces, tmp_path):
    broken = Raising("run_started")
    result = train(faces, tmp_path / "run", observed_by(broken=broken), epochs=2)
    assert broken.hooks() == [("run_started", None)]
    log = (result.run_dir / "train.log").read_text(encoding="utf-8")
    assert log.count("warning: plugin 'broken'") == 1
    assert "its observer hook run_started raised ValueError: run_started is broken; it does not observe this run" in log


def test_an_observer_whose_run_finished_raises_leaves_the_result_alone(faces, tmp_path):
    broken = Raising("run_finished")
    result = train(faces, tmp_path / "run", observed_by(broken=broken), epochs=1)
    assert result.best_epoch == 1 and broken.hooks()[-1] == ("run_finished", "finished")
    assert "its observer hook run_finished raised ValueError: run_finished is broken; the run goes on" in \
        (result.run_dir / "train.log").read_text(encoding="utf-8")


def test_ctrl_c_in_an_observer_is_not_swallowed(faces, tmp_path):
    class Impatient:
        @hydranet.hookimpl
        def epoch_finished(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(faces, tmp_path / "run", observed_by(impatient=Impatient()), epochs=1)


# ---------------------------------------------------------------- plugins: checks, listing, left out


def test_the_observer_hooks_are_hooks_the_plugin_checks_know():
    assert set(OBSERVER_HOOKS) <= set(HOOKS)
    assert HOOKS[-3:] == OBSERVER_HOOKS  # listed after the register_* hooks, in the order a run calls them


@pytest.mark.parametrize("written, problem", [
    ("epoch_finishd", "implements an unknown hook 'epoch_finishd'; did you mean 'epoch_finished'?"),
    ("on_run_finished", "implements an unknown hook 'on_run_finished'; did you mean 'run_finished'?"),
])
def test_a_misspelt_observer_hook_gets_a_did_you_mean_and_leaves_the_plugin_out(written, problem):
    def hook(run):
        pass

    plugin = type("Misspelt", (), {written: staticmethod(hydranet.hookimpl(hook))})()
    pm = make_plugin_manager(entry_points=False)
    assert not pm.add_plugin(plugin, "misspelt", distribution="hydranet-misspelt", version="0.1", builtin=False)
    [error] = pm.load_errors()
    assert error.startswith("plugin 'misspelt' (hydranet-misspelt 0.1): ") and problem in error
    assert "run_started, epoch_finished, run_finished" in error  # the hooks there are


def test_an_observer_hook_with_an_argument_hydranet_does_not_pass_is_refused_with_the_names():
    class Wrong:
        @hydranet.hookimpl
        def epoch_finished(self, run, epoch, metric):
            pass

    pm = make_plugin_manager(entry_points=False)
    assert not pm.add_plugin(Wrong(), "wrong", distribution="w", version="1", builtin=False)
    [error] = pm.load_errors()
    assert "takes 'metric', which hydranet does not pass" in error
    assert "write def epoch_finished(run, epoch, metrics)" in error


def test_an_unmarked_observer_hook_is_warned_about():
    class Unmarked:
        def run_finished(self, run, status, message):
            pass

    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(Unmarked(), "unmarked", distribution="u", version="1", builtin=False)
    [warning] = pm.load_errors()
    assert "run_finished is named like a hook but has no @hydranet.hookimpl marker" in warning


def test_a_plugin_left_out_for_a_failed_registration_observes_nothing():
    class Broken(Recorder):
        @hydranet.hookimpl
        def register_tasks(self, register):
            raise RuntimeError("no")

    pm = make_plugin_manager(entry_points=False)
    pm.add_plugin(Broken(), "broken", distribution="b", version="1", builtin=False)
    pm.add_plugin(Recorder(), "fine", distribution="f", version="1", builtin=False)
    components = load_components(pm)
    assert pm.info["broken"].left_out and "observes" not in pm.info["broken"].components
    assert [name for name, _ in observer_callers(components.pm, "run_started")] == ["fine"]


def test_hydranet_plugins_lists_what_each_plugin_observes(monkeypatch):
    from hydranet.core.cli import cli

    components = observed_by(recorder=Recorder())
    monkeypatch.setattr(plugins_module, "default_components", lambda: components)
    output = CliRunner().invoke(cli, ["plugins"], catch_exceptions=False).output
    assert "recorder  (hydranet-recorder 0.1)\n    observes: run_started, epoch_finished, run_finished\n" in output
    assert "observes" not in output.replace("recorder  (hydranet-recorder 0.1)\n    observes", "")  # built-ins don't


def test_an_inline_component_plugin_observes_nothing(faces, tmp_path):
    components = with_inline_plugin("register_backbones", "tiny2", lambda: None)
    assert observer_callers(components.pm, "epoch_finished") == []
    assert "observes" not in components.pm.info["test-plugin"].components


# ---------------------------------------------------------------- the documentation's TensorBoard observer


def load_tensorboard_example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hydranet_docs_example_observer",
                                                  ROOT / "docs" / "examples" / "observer_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tensorboard_example_without_tensorboard_says_how_to_install_it(faces, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ModuleNotFoundError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    result = train(faces, tmp_path / "run", observed_by(tensorboard=load_tensorboard_example()), epochs=1)
    log = (result.run_dir / "train.log").read_text(encoding="utf-8")
    assert log.count("warning: plugin 'tensorboard'") == 1  # run_started only: it then observes nothing
    assert "pip install tensorboard" in log and "it does not observe this run" in log


class StandInSummaryWriter:
    """torch.utils.tensorboard's SummaryWriter as the example uses it, recording the calls (tensorboard is no
    test dependency: what is tested is what the example hands TensorBoard)."""

    made: list[StandInSummaryWriter] = []

    def __init__(self, log_dir: str, purge_step: int | None = None):
        self.log_dir, self.purge_step, self.scalars, self.texts, self.closed = log_dir, purge_step, [], {}, False
        StandInSummaryWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.scalars.append((tag, value, global_step))

    def add_text(self, tag: str, text: str) -> None:
        self.texts[tag] = text

    def close(self) -> None:
        self.closed = True


def test_the_tensorboard_example_writes_each_epochs_row_and_closes(faces, tmp_path, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        types.SimpleNamespace(SummaryWriter=StandInSummaryWriter))
    monkeypatch.setattr(StandInSummaryWriter, "made", [])
    result = train(faces, tmp_path / "run", observed_by(tensorboard=load_tensorboard_example()), epochs=2)
    assert "warning" not in (result.run_dir / "train.log").read_text(encoding="utf-8")
    (writer,) = StandInSummaryWriter.made
    assert writer.log_dir == str(result.run_dir / "tensorboard") and writer.purge_step is None
    assert writer.closed and writer.texts["status"] == "finished" and '"tasks"' in writer.texts["spec"]
    rows = csv_rows(result.run_dir)
    expected = [(name.replace(".", "/", 1), float(value), int(row["epoch"]))
                for row in rows for name, value in row.items() if name != "epoch" and value != ""]
    got = [(tag, float(f"{value:.9g}"), step) for tag, value, step in writer.scalars]
    assert sorted(got) == sorted((tag, float(value), step) for tag, value, step in expected)


# ---------------------------------------------------------------- distributed: rank 0 alone observes


def test_with_two_processes_only_rank_zero_observes(faces, tmp_path, monkeypatch):
    """`hydranet train --nproc 2` with an installed observer (the one `hydranet new-plugin --kind observer`
    writes): one line per event, not two, and the run knows its world size."""
    import json
    import subprocess
    import sys

    import yaml

    from conftest import install_as_if_pip
    from hydranet.plugins.scaffold import write_plugin

    package = write_plugin("ranks", "observer", tmp_path)
    install_as_if_pip(package, tmp_path / "site", monkeypatch)  # allows it in HYDRANET_PLUGINS
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(faces, epochs=2)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(package / "src")]),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run([sys.executable, "-m", "hydranet", "train", str(tmp_path / "spec.yaml"), "--out",
                          str(tmp_path / "run"), "--nproc", "2", "--no-progress"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [json.loads(line) for line in (tmp_path / "run" / "ranks.jsonl").read_text().splitlines()]
    assert [(line["event"], line.get("epoch")) for line in lines] == [
        ("run_started", None), ("epoch_finished", 1), ("epoch_finished", 2), ("run_finished", None)]
    assert lines[0]["world_size"] == 2 and lines[-1]["status"] == "finished"
    rows = csv_rows(tmp_path / "run")
    assert [line["metrics"]["val_loss.age"] for line in lines[1:3]] == [
        pytest.approx(float(row["val_loss.age"]), rel=1e-6) for row in rows]


def test_new_plugin_kind_observer_says_an_observer_plugin(tmp_path):
    from hydranet.core.cli import cli

    result = CliRunner().invoke(cli, ["new-plugin", "watch", "--kind", "observer", "--out", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "(an observer plugin named 'watch')" in result.output


def test_ctrl_c_in_one_observers_run_started_still_finishes_those_that_started(faces, tmp_path):
    """Every run_started is followed by one run_finished: Ctrl-C in a slow run_started (wandb.init) must not leave
    an observer that already started (an open writer, a thread) without its run_finished."""
    class Stuck:
        finished: list = []

        @hydranet.hookimpl
        def run_started(self, run):
            raise KeyboardInterrupt

        @hydranet.hookimpl
        def run_finished(self, run, status, message):
            self.finished.append(status)

    stuck, watcher = Stuck(), Raising(None)
    components = observed_by(stuck=stuck, watcher=watcher)  # pluggy calls the last added first: watcher, then stuck
    with pytest.raises(KeyboardInterrupt):
        train(faces, tmp_path / "run", components, epochs=1)
    assert watcher.hooks() == [("run_started", None), ("run_finished", "interrupted")]
    assert stuck.finished == []  # it never started


def test_run_info_takes_keywords_only_so_fields_can_be_added():
    with pytest.raises(TypeError):
        RunInfo(Path("run"), {})  # positional: a later field inserted before another would shift them
    assert RunInfo(run_dir=Path("run"), spec={}).name == "run"
