"""The hooks a hydranet plugin may implement.

Two families: `register_*` hooks provide components and commands; the run
observer hooks (`run_started`, `epoch_finished`, `run_finished`, at the end)
watch a training run. Each `register_*` hook receives a `register` callback (as in llm and datasette):
`register(name, factory, *, params=None, description=None, aliases=())`, where
`params` is a pydantic model that validates the component's spec parameters and
`factory(params)` (or `factory(name, params)` for tasks) builds it; registered without
`params=`, the factory is called without them (`factory()`, `factory(name)`, `factory(tasks)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # a plugin's `from hydranet import hookimpl` stays light: observers.py is not imported
    from hydranet.core.observers import RunInfo

PROJECT = "hydranet"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_tasks(register: Any) -> None:
    """Register tasks and task kinds: `register(name, factory, params=Model)`.

    `factory(name, params)` returns a `hydranet.Task`. A spec entry
    `{name: smiling, kind: binary, label: smile}` calls the factory registered as
    `binary` with the task name `smiling`; a plain `- age` calls the factory `age`.
    """


@hookspec
def register_backbones(register: Any) -> None:
    """Register backbones: `factory(params)` returns a `hydranet.Backbone`."""


@hookspec
def register_weightings(register: Any) -> None:
    """Register weightings: `factory(tasks, params)` returns a `hydranet.Weighting`."""


@hookspec
def register_datasets(register: Any) -> None:
    """Register datasets: `factory(params)` returns a `hydranet.Dataset`."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands to the `hydranet` command group `cli`."""


# ---------------------------------------------------------------- run observers
#
# The hooks above ask a plugin for something (imperative: register_tasks); the hooks below tell it that
# something happened (past tense: run_started), and what they return is ignored. Both families are named
# without a project prefix (pluggy only calls functions marked `@hydranet.hookimpl`, which is the
# namespace), so a plugin reads `register_tasks`, `register_commands`, `run_started`, `epoch_finished`,
# `run_finished`. They are called on rank 0 only, from the training loop, with numbers it already read
# (no extra device synchronisation); one that raises is reported and cannot stop the run
# (hydranet.core.observers). They run in the training process between epochs: keep them quick, or hand
# slow work (uploads, network calls) to a thread.


@hookspec
def run_started(run: RunInfo) -> None:
    """A run is set up (data, model, a resumed run's checkpoint) and its first epoch is about to start.

    `run` (a `hydranet.RunInfo`) is the same object in every call of this run: its folder, resolved spec,
    task names, epochs, device, world size, and `resumed_from` (the epoch a resumed run continues at,
    None for a new run). Every run_started is followed by one run_finished, however the run ends.
    """


@hookspec
def epoch_finished(run: RunInfo, epoch: int, metrics: Mapping[str, float]) -> None:
    """Epoch `epoch` is trained, validated, written to metrics.csv and saved in last.pt.

    `metrics` is its metrics.csv row (read-only) without the `epoch` column: `train_loss.<task>`,
    `val_loss.<task>`, `val.<task>.<metric>`, `weight.<task>`, `lr`, `train_seconds`, `val_seconds`.
    A resumed run reports only the epochs it runs itself, from `run.resumed_from` on.
    """


@hookspec
def run_finished(run: RunInfo, status: str, message: str | None) -> None:
    """The run has ended; `status` says how.

    - "finished": every epoch is done and summary.json is written; `message` is None.
    - "interrupted": stopped by Ctrl-C or a signal; `message` says what was saved and how to continue.
    - "nonfinite": stopped because a loss (or the weighting's weights) went non-finite; `message` is the error.
    - "failed": any other error; `message` is the error as the user sees it.
    """
