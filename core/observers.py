"""Run observers: plugins that watch a training run (TensorBoard, W&B, MLflow, a message when it ends).

A plugin observes runs by implementing the hooks `run_started(run)`,
`epoch_finished(run, epoch, metrics)` and `run_finished(run, status, message)`
(`core/hookspecs.py`). Every installed plugin's observer hooks run, as pytest
runs every installed plugin's hooks; `HYDRANET_PLUGINS` limits which plugins
load. `RunObservers` is what the training loop calls them through:

- only on rank 0 of a distributed run: one report per run, and the other
  ranks never wait on an observer;
- with what the loop has already read to the host for metrics.csv, after the
  row and the checkpoint are written: observing adds no device synchronisation,
  and an observer that reads the run folder finds the epoch there;
- so that an observer cannot lose the run: what it raises is logged once, as
  a warning naming its plugin and the hook, and the run goes on. That hook of
  that plugin is not called again in the run (the error would most likely
  repeat, each time costing its time, and a log with unreported gaps is worse
  than one that stops where the warning says). A plugin whose `run_started`
  raised does not observe the run at all; one whose `epoch_finished` raised
  still gets `run_finished`, to close what it opened.

Each plugin's hook is called through pluggy (`PluginManager.subset_hook_caller`
with the other plugins removed), in pluggy's order, so an error in one
plugin's hook does not skip the others'.

This module imports neither torch nor the engine: `from hydranet import RunInfo`
in a plugin stays cheap.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from hydranet.core.errors import HydranetError, TrainingInterrupted

if TYPE_CHECKING:
    from hydranet.core.plugins import PluginManager

#: The observer hooks, in the order a run calls them.
OBSERVER_HOOKS: tuple[str, ...] = ("run_started", "epoch_finished", "run_finished")

#: How a run ended, as `run_finished` receives it.
RunStatus = Literal["finished", "interrupted", "nonfinite", "failed"]
STATUSES: tuple[str, ...] = ("finished", "interrupted", "nonfinite", "failed")

#: What a failed hook means for the rest of the run, said in the warning.
CONSEQUENCE = {
    "run_started": "it does not observe this run",
    "epoch_finished": "hydranet does not call its epoch_finished again in this run (it still gets run_finished)",
    "run_finished": "",
}


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What an observer is told about a run, once, in `run_started`; the same object reaches every hook of the run.

    `spec` is the resolved spec as `spec.yaml` holds it (every default filled
    in), a copy made for the run's observers: changing it changes nothing in
    the run, but every observer of the run sees the same dict, so treat it as
    read-only. It is left out of comparisons and the hash, so a RunInfo can
    key a dict. Fields are keyword-only, so that later versions can add some.
    """

    run_dir: Path  #: the run folder: metrics.csv, train.log, last.pt, best.pt, summary.json at the end
    spec: dict[str, Any] = field(compare=False, repr=False)  #: the resolved spec (`spec.to_dict()`)
    tasks: tuple[str, ...] = ()  #: task names, in the spec's order
    epochs: int = 0  #: the epochs the run trains in all (a resumed run's earlier ones included)
    device: str = "cpu"  #: "cpu", "cuda:0", "mps"
    world_size: int = 1  #: processes training together (`--nproc`); observers run in rank 0's only
    rank: int = 0  #: this process's rank: always 0 where observers are called
    resumed_from: int | None = None  #: the epoch a resumed run continues at; None for a new run
    version: str = ""  #: hydranet's version

    @property
    def name(self) -> str:
        """The run folder's name: a label for the run in a dashboard."""
        return self.run_dir.name


def outcome(error: BaseException | None, nonfinite: bool = False) -> tuple[RunStatus, str | None]:
    """`run_finished`'s (status, message) for a run that ended with `error` (None: it finished).

    `nonfinite` is the engine's word that `error` is its stop for a non-finite
    loss, which is otherwise a TrainingError like any other.
    """
    if error is None:
        return "finished", None
    if isinstance(error, (TrainingInterrupted, KeyboardInterrupt)):
        return "interrupted", str(error) or "interrupted (Ctrl-C)"
    if nonfinite:
        return "nonfinite", str(error)
    if isinstance(error, HydranetError):
        return "failed", str(error)
    return "failed", f"{type(error).__name__}: {error}"


class RunObservers:
    """The observer hooks of one run, called so that no observer can stop or slow the run by failing.

    Made with `pm=None` (a distributed run's other ranks), every call does nothing.
    """

    def __init__(self, pm: PluginManager | None, run: RunInfo, log: Callable[..., None]):
        self.run = run
        #: `RunFolder.log`: a line for train.log and stderr; with `console=False`, for train.log alone
        self.log = log
        self.pm = pm
        #: hook -> [(plugin name, that plugin's hook alone)], in pluggy's calling order
        self.callers = {hook: observer_callers(pm, hook) for hook in OBSERVER_HOOKS} if pm is not None else {}
        self.failed: set[tuple[str, str]] = set()  #: (plugin, hook) pairs that raised: not called again
        self.nonfinite = False  #: set by the engine before it raises its non-finite stop

    @classmethod
    def idle(cls) -> RunObservers:
        """Observers that observe nothing: a Trainer's until its run is set up (and one driven step by step)."""
        return cls(None, RunInfo(run_dir=Path(), spec={}), lambda line, console=True: None)

    @property
    def plugins(self) -> list[str]:
        """The plugins that observe this run."""
        return list(dict.fromkeys(name for callers in self.callers.values() for name, _ in callers))

    def call(self, hook: str, **kwargs: Any) -> None:
        """Call `hook` of every observing plugin; what one raises is reported and does not reach the others."""
        for plugin, caller in self.callers.get(hook, []):
            self._call_one(plugin, hook, caller, **kwargs)

    def _call_one(self, plugin: str, hook: str, caller: Callable[..., Any], **kwargs: Any) -> None:
        if (plugin, hook) in self.failed:
            return
        try:
            caller(**kwargs)
        except Exception as error:  # an observer may raise anything; Ctrl-C (not an Exception) passes
            self._failed(plugin, hook, error)

    def _failed(self, plugin: str, hook: str, error: Exception) -> None:
        """Say once that `plugin`'s `hook` raised, and stop calling it (all its hooks, if it never started)."""
        self.failed |= {(plugin, h) for h in (OBSERVER_HOOKS if hook == "run_started" else (hook,))}
        who = self.pm.describe(plugin) if self.pm is not None else f"plugin '{plugin}'"
        then = CONSEQUENCE[hook]
        self.log(f"warning: {who}: its observer hook {hook} raised {type(error).__name__}: {error}; "
                 f"{then + '; ' if then else ''}the run goes on")
        # the traceback, for the observer's author, in train.log only: the console has the line above
        self.log("".join(traceback.format_exception(error)).rstrip(), console=False)

    def epoch_finished(self, epoch: int, row: Mapping[str, Any]) -> None:
        """Report an epoch's metrics.csv row (a read-only copy, without its `epoch` column)."""
        if self.callers:
            metrics = MappingProxyType({k: v for k, v in row.items() if k != "epoch"})
            self.call("epoch_finished", run=self.run, epoch=epoch, metrics=metrics)

    @contextlib.contextmanager
    def watching(self) -> Iterator[RunObservers]:
        """`run_started` on entry; `run_finished` on exit, with how the run ended (the error goes on up).

        Ctrl-C in one plugin's `run_started` still gets `run_finished` to those that had started (they may
        have opened something); the plugins whose `run_started` had not returned are not told.
        """
        started = [plugin for plugin, _ in self.callers.get("run_started", [])]
        try:
            for plugin, caller in self.callers.get("run_started", []):
                self._call_one(plugin, "run_started", caller, run=self.run)
                started.remove(plugin)
        except BaseException as error:
            self.failed |= {(plugin, hook) for plugin in started for hook in OBSERVER_HOOKS}
            status, message = outcome(error, self.nonfinite)
            self.call("run_finished", run=self.run, status=status, message=message)
            raise
        try:
            yield self
        except BaseException as error:
            status, message = outcome(error, self.nonfinite)
            self.call("run_finished", run=self.run, status=status, message=message)
            raise
        self.call("run_finished", run=self.run, status="finished", message=None)


def observer_callers(pm: PluginManager, hook: str) -> list[tuple[str, Callable[..., Any]]]:
    """(plugin name, a caller of `hook` for that plugin alone), in the order pluggy calls them.

    Plugins left out when their components were loaded (a register hook
    raised) are left out here too, as their commands are.
    """
    impls = getattr(pm.hook, hook).get_hookimpls()
    plugins = pm.get_plugins()
    found = []
    for impl in reversed(impls):  # pluggy calls the last registered (and tryfirst) first
        info = pm.info.get(impl.plugin_name)
        if info is not None and info.left_out:
            continue
        others = [p for p in plugins if p is not impl.plugin]
        found.append((impl.plugin_name, pm.subset_hook_caller(hook, remove_plugins=others)))
    return found


def observing_plugins(pm: PluginManager) -> dict[str, list[str]]:
    """Plugin name -> the observer hooks it implements (what `hydranet plugins` lists as `observes`)."""
    found: dict[str, list[str]] = {}
    for hook in OBSERVER_HOOKS:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            found.setdefault(impl.plugin_name, []).append(hook)
    return found
