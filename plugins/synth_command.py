"""The `hydranet synth` command: draws a UTKFace-style folder of synthetic faces.

A module of its own, apart from the `synthetic` dataset it runs, so that
listing the commands (`hydranet --help`) imports neither torch nor numpy
nor PIL: the drawing code is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hydranet.core.option_types import Count, progress_option
from hydranet.core.errors import DataError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.wording import plural


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", default=2000, show_default=True, type=Count(1), help="Number of images.")
@click.option("--size", default=64, show_default=True, type=Count(16, 512), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=Count(0), help="Seed of the drawing.")
@progress_option()  # worded as eval's and predict's
def synth_command(out: Path, count: int, size: int, seed: int, progress: bool | None) -> None:
    """Draw a UTKFace-style folder of synthetic faces into OUT.

    Labels are in the file names (AGE_GENDER_RACE_DATE.jpg.chip.jpg), so the
    folder trains with the `utkface` dataset. An existing folder made with the
    same settings is reused.

    \b
    Example:
      hydranet synth data/faces --count 5000 --size 64
      # then, in a spec:  data: {name: utkface, root: data/faces}
    """
    from hydranet.plugins.datasets.synthetic import is_complete, write_synthetic  # numpy, PIL and torch: only to run

    reused = is_complete(out, count, size, seed)
    try:
        path = write_synthetic(out, count, size, seed, progress=progress)
    except DataError as error:
        raise click.ClickException(str(error)) from error
    verb = "reused" if reused else "wrote"
    click.echo(f"{verb} {plural(count, 'synthetic face')} ({size}x{size} px, seed {seed}) in {path}")


@hookimpl
def register_commands(cli: Any) -> None:
    cli.add_command(synth_command)
