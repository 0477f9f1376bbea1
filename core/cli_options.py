"""Options that several commands share, in one place so that their names, help and checks read the same.

`cli.py` (train) and `cli_model.py` (eval, predict) both import this; it
imports neither, so neither imports the other for an option.
"""

from __future__ import annotations

from typing import Any

import click
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
