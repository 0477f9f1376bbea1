"""The plugin commands the command line lists without importing torch.

`hydranet --help`, `hydranet CMD --help` and shell completion need every
command's name and one-line help, and plugins add commands; but most built-in
plugins (tasks, backbones, weightings, datasets) import torch, which takes a
second or two. So the `hydranet` group lists its plugin commands from a light
plugin manager (`command_components`): the built-in plugins that add commands,
each a module that imports no torch (`COMMAND_PLUGINS`; a command imports what
it runs when it runs, as `hydranet.plugins.synth_command` does), and every
allowed entry point (a third-party plugin may add commands, and whether it is
left out decides whether they are listed, as for `default_components()`).

Once every plugin loads (`default_components()`, which any command that reads
a spec or a registry calls), their commands are added to the group again: the
default components then record what each plugin's `register_commands` did
(`hydranet plugins` shows it), as when the group added them from there.

tests/test_cli_startup.py keeps `COMMAND_PLUGINS` in step with the built-in
plugins' hooks, and checks that those modules import no torch.
"""

from __future__ import annotations

from functools import cache

import click

from hydranet.core.plugins import BUILTIN_PLUGINS, Components, load_components, make_plugin_manager, \
    when_default_components_load

#: the built-in plugins that implement register_commands: modules light enough to import when the commands are listed
COMMAND_PLUGINS: tuple[str, ...] = ("hydranet.plugins.scaffold", "hydranet.plugins.synth_command")


@cache
def command_components() -> Components:
    """The components of the built-in plugins that add commands, and of every entry point.

    Loading their components (not only importing them) tells which of them are
    left out, whose commands are not listed.
    """
    return load_components(make_plugin_manager(builtins=[name for name in BUILTIN_PLUGINS if name in COMMAND_PLUGINS]))


def add_plugin_commands(group: click.Group) -> None:
    """Add every plugin's commands to `group`: the command plugins' now, every plugin's once they all load."""
    command_components().add_commands(group)
    when_default_components_load(lambda components: add_every_plugin_command(group, components))


def add_every_plugin_command(group: click.Group, components: Components) -> None:
    """Add the commands of every loaded plugin to `group`, once.

    They are added to a group of their own first: `group` already holds the
    light listing's commands, and `add_commands` records for each plugin only
    the names it adds that were not there before.
    """
    if not getattr(group, "_every_plugin_added", False):
        group._every_plugin_added = True  # type: ignore[attr-defined]
        own = click.Group()
        components.add_commands(own)
        group.commands.update(own.commands)
