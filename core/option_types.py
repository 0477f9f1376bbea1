"""Option types, and options worded alike everywhere, for hydranet's commands and for the commands plugins add
(`register_commands`, as `hydranet synth`).

Apart from `cli_types` and `cli_options` (hydranet's own command line) so that a plugin's
command can use them: plugins import core's contracts and helpers, never the
CLI. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click


def progress_option() -> Any:
    """`--progress/--no-progress`: a progress bar on stderr, by default where stderr is a terminal (`show_progress`)."""
    return click.option("--progress/--no-progress", default=None,
                        help="Progress bar on stderr (default: on in a terminal).")


def show_progress(progress: bool | None) -> bool:
    """Whether `--progress/--no-progress` asks for a bar: as given, else where stderr is a terminal."""
    import sys

    return sys.stderr.isatty() if progress is None else progress


class Count(click.IntRange):
    """A whole number with bounds, shown as `N` in usage and help (not click's `INTEGER RANGE`), and refused as
    "'abc' is not an integer" (not click's "not a valid integer range")."""

    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = None, metavar: str = "N") -> None:
        super().__init__(min, max)
        self.metavar = metavar

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                int(value.strip())
            except ValueError:
                self.fail(f"{value!r} is not an integer", param, ctx)
        return super().convert(value, param, ctx)


class KindChoice(click.Choice):
    """A choice of component kind that takes the singular and the plural alike (`weighting`, `weightings`), as
    `hydranet list` takes plurals and `new-plugin --kind` singulars; `hint(value)` may say what an unknown value
    is (`hydranet list dwa`: a weighting)."""

    def __init__(self, choices: Sequence[str], hint: Any = None) -> None:
        super().__init__(list(choices))
        self.hint = hint

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value not in self.choices:
            for other in (value + "s", value.removesuffix("s")):
                if other != value and other in self.choices:
                    return other
            said = self.hint(value) if self.hint is not None else None
            if said:
                self.fail(f"{value!r} is not one of {', '.join(map(repr, self.choices))}; {said}", param, ctx)
        return super().convert(value, param, ctx)
