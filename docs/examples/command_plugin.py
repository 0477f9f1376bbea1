"""A command plugin: `hydranet labels SPEC`, how many samples carry each task's label.

Before a long run it is worth knowing that a new task's `label` field is
actually present: a misspelt CSV column trains nothing. The `register_commands`
hook receives the `hydranet` click group; add commands to it as to any click
group. Errors that are the user's to fix are `HydranetError`s: the CLI prints
their message without a traceback.
"""

from __future__ import annotations

from typing import Any

import click

import hydranet


@click.command("labels")
@click.argument("spec", default="demo")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec value (repeatable).")
def labels_command(spec: str, overrides: tuple[str, ...]) -> None:
    """Count, per task, the samples of SPEC's dataset that have a usable label.

    \b
    Examples:
      hydranet labels specs/utkface.yaml --set data.root=data/UTKFace
      hydranet labels my.yaml
    """
    # Imported here, not at the top: `hydranet -h` then stays fast however many plugins are installed.
    from hydranet.core.report import format_table
    from hydranet.core.spec import load_spec

    resolved = load_spec(spec, overrides)
    samples = resolved.data.build().samples()
    rows = []
    for task in resolved.build_tasks():
        labelled = sum(task.parse_label(sample.record) is not None for sample in samples)
        rows.append([task.name, task.label, labelled, len(samples) - labelled])
    click.echo(format_table(["task", "field", "labelled", "missing or invalid"], rows))


@hydranet.hookimpl
def register_commands(cli: Any) -> None:
    cli.add_command(labels_command)
