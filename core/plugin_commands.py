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
a spec or a registry calls), the default components record what each plugin's
`register_commands` did (`hydranet plugins` shows it, and `load_errors` names a
plugin whose commands raised), as when the group added the commands from there.

tests/test_cli_startup.py keeps `COMMAND_PLUGINS` in step with the built-in
plugins' hooks, and checks that those modules import no torch.
"""

from __future__ import annotations

from functools import cache

import click

from hydranet.core.plugins import BUILTIN_PLUGINS, Components, load_components, make_plugin_manager, \
    record_commands_in_default_components

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
    """Add every plugin's commands to `group` (the command plugins' and the entry points'), to be recorded by the
    default components once they load."""
    command_components().add_commands(group)
    record_commands_in_default_components()
