"""The plugin commands the command line lists without importing torch.

`hydranet --help`, `hydranet CMD --help` and shell completion need every
command's name and one-line help, and plugins add commands; but most built-in
plugins (tasks, backbones, weightings, datasets) import torch, which takes a
second or two. So the `hydranet` group lists its plugin commands from a light
plugin manager (`command_components`): the built-in plugins that add commands
and import no torch, and every allowed entry point (a third-party plugin may
add commands, and whether it is left out decides whether they are listed, as
for `default_components()`). A built-in plugin that adds a command but imports
torch is a stand-in meanwhile (`StandIn`: the command's name and help, so the
group's help shows it as it is); running that command, or asking for its own
help, loads every plugin and the real command (core/cli.py's `resolve_command`).

Once every plugin loads (`default_components()`, which any command that reads
a spec or a registry calls), their commands are added to the group again, the
stand-ins replaced: the default components then record what each plugin's
`register_commands` did, as when the group added them from there directly.

tests/test_cli_startup.py keeps `COMMAND_PLUGINS` in step with the built-in
plugins' hooks, and each stand-in's help with its real command's.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import click

from hydranet.core.plugins import BUILTIN_PLUGINS, Components, load_components, make_plugin_manager, \
    when_default_components_load

#: the built-in plugins that implement register_commands: None for a module light enough to import when the commands
#: are listed; for one that imports torch, each command it adds -> the first paragraph of its help (what `hydranet
#: --help` shortens into its line), which its stand-in shows
COMMAND_PLUGINS: dict[str, dict[str, str] | None] = {
    "hydranet.plugins.datasets.synthetic": {"synth": "Draw a UTKFace-style folder of synthetic faces into OUT."},
    "hydranet.plugins.scaffold": None,
}


class StandIn(click.Command):
    """A built-in plugin's command by name and help, until the plugin (and torch) is imported to run it."""

    def __init__(self, name: str, help: str, plugin: str) -> None:
        super().__init__(name, help=help)
        self.plugin = plugin

    def invoke(self, ctx: click.Context) -> Any:  # pragma: no cover - the group resolves a stand-in before it runs
        raise RuntimeError(f"the command {self.name!r} of {self.plugin} was not loaded: resolve it through the "
                           "`hydranet` group, which loads every plugin for it")


@cache
def command_components() -> Components:
    """The components of the built-in plugins that add commands without importing torch, and of every entry point.

    Loading their components (not only importing them) tells which of them are
    left out, whose commands are not listed.
    """
    light = [name for name in BUILTIN_PLUGINS if name in COMMAND_PLUGINS and COMMAND_PLUGINS[name] is None]
    return load_components(make_plugin_manager(builtins=light))


def add_plugin_commands(group: click.Group) -> None:
    """Add every plugin's commands to `group`: stand-ins and light plugins' now, every plugin's once they load.

    Stand-ins first, then the light plugins' and the entry points' commands, so
    that a third-party command of the same name replaces a built-in one, as it
    does when every plugin loads (built-ins first, no two of them share a name).
    """
    for plugin in BUILTIN_PLUGINS:
        for name, help in (COMMAND_PLUGINS.get(plugin) or {}).items():
            group.add_command(StandIn(name, help, plugin))
    command_components().add_commands(group)
    when_default_components_load(lambda components: add_every_plugin_command(group, components))


def add_every_plugin_command(group: click.Group, components: Components) -> None:
    """Add the commands of every loaded plugin to `group` (the stand-ins' real commands among them), once."""
    if not getattr(group, "_every_plugin_added", False):
        group._every_plugin_added = True  # type: ignore[attr-defined]
        components.add_commands(group)
