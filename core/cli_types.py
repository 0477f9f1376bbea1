"""Small click pieces the commands share: --set's form check and hints for options
given in the wrong place (the option types, `Count` and `KindChoice`, are in `option_types`, for plugins' commands too).

Mistakes in how a command was called are click usage errors (exit status 2); problems in spec files, data and
runs are HydranetErrors (exit status 1). Imports no torch at import time.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from hydranet.core.cli_options import HintingCommand


def check_overrides(ctx: click.Context, param: click.Parameter, value: Sequence[str],
                    example: str = "train.epochs=5") -> Sequence[str]:
    """--set's callback: an override without `=VALUE` is a usage error, in the words a spec problem would use."""
    from hydranet.core.overrides import CLI_OPTION, form_problem

    problems = [problem for problem in (form_problem(override, example) for override in value or ())
                if problem is not None]
    if problems:
        raise click.UsageError("\n".join(f"{CLI_OPTION}: {problem}" for problem in problems), ctx)
    return value


def check_data_overrides(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> Sequence[str]:
    """`check_overrides` for a --set that overrides the data only (eval's): its example is a data key, not
    train.epochs, which that --set refuses."""
    return check_overrides(ctx, param, value, example="data.val_fraction=0.2")


#: options of hydranet itself that go before the command (`hydranet --traceback train`), never after it
GROUP_OPTIONS = ("--traceback",)


def group_option_hint(error: click.NoSuchOption) -> click.NoSuchOption | None:
    """`hydranet train --traceback`: the same error, saying where the option goes; None for other options."""
    if error.option_name not in GROUP_OPTIONS or error.ctx is None:
        return None
    root, _, command = error.ctx.command_path.partition(" ")  # "hydranet spec show": "spec show"
    command = command or "COMMAND"
    return click.NoSuchOption(error.option_name, ctx=error.ctx, message=(
        f"No such option '{error.option_name}' for {command}: it is {root}'s own and goes before the command: "
        f"{root} {error.option_name} {command} ..."))


def dataset_parameter(option: str) -> str | None:
    """The dataset parameter an unknown option names (`--root` -> `root`), or None."""
    name = option.lstrip("-").replace("-", "_")
    try:
        from hydranet.core.plugins import default_components

        names = {key for entry in default_components().registry("datasets") if entry.params is not None
                 for key in entry.params.model_fields}
    except Exception:  # a listing of the datasets is only a hint's help
        names = {"root", "csv"}
    return name if name in names else None


class SpecHintingCommand(HintingCommand):
    """A HintingCommand whose hint also knows the dataset's parameters: `--root faces` points to
    `--set data.root=faces`, as `--epochs 2` points to `--set train.epochs=2`."""

    def spec_key(self, option: str) -> str | None:
        key = super().spec_key(option)
        sections = self.spec_sections
        if key is not None or sections is False or (sections is not None and "data" not in sections):
            return key
        parameter = dataset_parameter(option)
        return None if parameter is None else f"data.{parameter}"


__all__ = ["GROUP_OPTIONS", "SpecHintingCommand", "check_data_overrides", "check_overrides", "dataset_parameter",
           "group_option_hint"]
