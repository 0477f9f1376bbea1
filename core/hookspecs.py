"""The hooks a hydranet plugin may implement.

Each `register_*` hook receives a `register` callback (as in llm and datasette):
`register(name, factory, *, params=None, description=None, aliases=())`, where
`params` is a pydantic model that validates the component's spec parameters and
`factory(params)` (or `factory(name, params)` for tasks) builds it; registered without
`params=`, the factory is called without them (`factory()`, `factory(name)`, `factory(tasks)`).
"""

from __future__ import annotations

from typing import Any

import pluggy

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
