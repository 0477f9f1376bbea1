"""Options that several commands share, in one place so that their names, help and checks read the same, and
`HintingCommand`, whose usage errors say what was probably meant.

`cli.py` (train) and `cli_model.py` (eval, predict) both import this; it
imports neither, so neither imports the other for an option.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hydranet.core.wording import plural

if TYPE_CHECKING:
    import torch

SET_HELP = "Override a spec value, e.g. --set train.epochs=5 --set data.root=DIR (repeatable)."


def device_option(purpose: str, *, default: str | None = "auto", more: str = "") -> Any:
    """The `--device` option: `Device to PURPOSE.` and what `more` adds, checked by `pick_device_option`."""
    return click.option("--device", default=default, show_default=default is not None,
                        help=f"Device to {purpose}.{' ' + more if more else ''}")


def pick_device_option(name: str) -> torch.device:
    """`--device`, checked before a checkpoint or any data loads, with messages that name the option."""
    from hydranet.core.device import pick_device

    return pick_device(name, option="--device")


#: Files that hold a model, not an image: checkpoints and exports. A shell pattern that matches several runs
#: puts them where one is expected, or among predict's images.
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".pt2", ".onnx", ".safetensors")


def is_model_path(arg: str) -> bool:
    """A checkpoint or export file, or a run folder (one that holds last.pt or best.pt)."""
    path = Path(arg)
    if path.is_dir():
        return (path / "last.pt").is_file() or (path / "best.pt").is_file()
    return path.suffix.lower() in MODEL_SUFFIXES


def shell_pattern(paths: Sequence[str]) -> str | None:
    """The shell pattern several paths look expanded from ('runs/demo-*/best.pt' for two runs' best.pt), or None
    where none is plausible: the star must stand for whole words (between separators such as / - _ .). The common
    start is cut back to a separator (runs/demo-20261128-004101 and runs/demo-20261128-005230, the default run
    folders of one day, give 'runs/demo-20261128-*'); a common end that starts inside a word means other file names
    (runs/a/best.pt and runs/a/last.pt, typed one by one, are not said to come from 'runs/a/*st.pt')."""
    prefix = os.path.commonprefix(list(paths))
    while prefix and prefix[-1].isalnum():
        prefix = prefix[:-1]
    rest = [p[len(prefix):] for p in paths]
    suffix = os.path.commonprefix([r[::-1] for r in rest])[::-1]
    if any(not r[:len(r) - len(suffix)] for r in rest):  # one path is the others' prefix: no star stands for it
        return None
    if suffix and suffix[0].isalnum():
        return None
    return f"{prefix}*{suffix}"


def several_models(paths: Sequence[str], what: str) -> str:
    """'2 checkpoints given: A, B', and where a shell pattern plausibly gave them, '; a shell pattern like
    runs/demo-*/best.pt matches every run it fits'."""
    pattern = shell_pattern(paths)
    said = f"{plural(len(paths), what)} given: {', '.join(paths)}"
    return said + (f"; a shell pattern like {pattern} matches every run it fits" if pattern else "")


def compare_hint(models: Sequence[str]) -> str:
    """What to do instead of evaluating several checkpoints or runs at once: compare their run folders, listed
    once each; or, for checkpoints of one run, which of them to name."""
    runs = list(dict.fromkeys(m if Path(m).is_dir() else str(Path(m).parent) for m in models))
    if len(runs) > 1:
        return f" (to compare runs: hydranet compare {' '.join(runs)})"
    if all(Path(m).name in ("best.pt", "last.pt") for m in models):
        return f" of {runs[0]}'s checkpoints: best.pt holds its best epoch, last.pt its last"
    return ""


def spec_field_for(option: str, sections: Sequence[str] | None) -> str | None:
    """The spec key an unknown option looks like, or None: '--epochs' -> 'train.epochs', '--lr' -> 'train.lr',
    '--image-size' -> 'image_size', '--weighting' -> 'weighting', '--train.epochs' -> 'train.epochs'.

    `sections`: the top-level keys the command's --set may change (None: all).
    """
    from pydantic import BaseModel

    from hydranet.core.spec_models import Spec

    name = option.lstrip("-").replace("-", "_")
    allowed = [field for field in Spec.model_fields if sections is None or field in sections]
    first, dot, rest = name.partition(".")
    if dot:
        return name if first in allowed else None
    if name in allowed:
        if name == "data":
            return "data.root"  # `--data DIR`: the folder the dataset reads
        if name in ("backbone", "weighting", "init_from", "image_size"):  # one value (a name, a path, a number)
            return name
    for section in allowed:
        model = Spec.model_fields[section].annotation
        if isinstance(model, type) and issubclass(model, BaseModel) and name in model.model_fields and name != "name":
            return f"{section}.{name}"
    return None


def option_value(args: Sequence[str], option: str) -> str:
    """What the user gave an unknown option: '--epochs 2' and '--epochs=2' give '2'; else 'VALUE'."""
    for index, arg in enumerate(args):
        if arg.startswith(option + "="):
            return arg[len(option) + 1:]
        if arg == option and index + 1 < len(args) and not args[index + 1].startswith("--"):
            return args[index + 1]
    return "VALUE"


class HintingCommand(click.Command):
    """A command whose usage errors say what was probably meant.

    - An unknown option named like a spec field (`--epochs 2`) points to
      `--set train.epochs=2`, for commands that take --set (`spec_sections`:
      the top-level spec keys their --set may change, None for all).
    - Extra arguments where one checkpoint or run is taken, when several of
      them were given (a shell pattern like runs/demo-* matched several runs),
      say so instead of click's bare "Got unexpected extra arguments".
    """

    def __init__(self, *args: Any, spec_sections: Sequence[str] | None | bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec_sections = spec_sections

    def spec_key(self, option: str) -> str | None:
        """The spec key an unknown option names (`--epochs` -> `train.epochs`) for the hint, or None."""
        if self.spec_sections is False or option.startswith("--set"):
            return None
        return spec_field_for(option, self.spec_sections or None)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            key = self.spec_key(error.option_name)
            if key is None:
                raise
            raise click.NoSuchOption(error.option_name, ctx=ctx, message=(
                f"No such option '{error.option_name}'. Spec values are set with --set: "
                f"--set {key}={option_value(given, error.option_name)}")) from None
        except click.UsageError as error:
            if not error.message.startswith("Got unexpected extra argument"):
                raise
            models = [arg for arg in given if not arg.startswith("-") and is_model_path(arg)]
            if len(models) < 2:
                raise
            what = "run folder" if all(Path(m).is_dir() for m in models) else "checkpoint"
            compare = compare_hint(models) if self.name == "eval" else ""
            raise click.UsageError(f"{ctx.command_path} takes one {what} at a time ({several_models(models, what)})."
                                   f" Name one{compare}.", ctx) from None
