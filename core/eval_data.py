"""Which data a trained model may be evaluated on: data.* overrides only, and what `--data DIR` means for its dataset.

`TrainedModel.evaluate` and `hydranet eval` take overrides of the data
section alone (the model and its training settings come from the
checkpoint), and a folder given as `data.root` is read, drawn into or
refused depending on the dataset (`folder_role`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hydranet.core.errors import InputError
from hydranet.core.overrides import override_list
from hydranet.core.registry import describe_plugin


def check_data_overrides(overrides: str | Iterable[str], option: str = "overrides") -> tuple[str, ...]:
    """Overrides of the data only: evaluating a trained model can change what it sees, not how it was made.

    A `train.epochs=3` would otherwise be applied to a spec nobody trains
    again and silently ignored.

    One override may be given as a string, as from Python's
    `model.evaluate("data.root=DIR")`. Messages name the overrides as
    `option`: "overrides" (the Python argument) or "--set" (the CLI's).
    """
    example = ("--set data.root=DIR or --set data.val_fraction=0.2" if option == "--set"
               else f"{option}='data.root=DIR' or {option}=['data.root=DIR', 'data.val_fraction=0.2']")
    overrides = tuple(override_list(overrides, option, form="data.KEY=VALUE", example="data.root=DIR"))
    for item in overrides:
        key, equals, _ = item.partition("=")
        if not equals or not key.strip():
            raise InputError(f"{option}: {item!r} is not of the form data.KEY=VALUE (e.g. {example})")
        key = key.strip()
        if key != "data" and not key.startswith("data."):
            raise InputError(f"override '{item}' is not a data.* key: evaluating a checkpoint can change only "
                                f"its data (e.g. {example}); the model and its training settings come from the "
                                "checkpoint")
    return overrides


def folder_role(entry: Any) -> str:
    """What a dataset does with the folder `data.root` names, which `--data DIR` sets.

    "reads": it reads its images from there: its parameters have a `root`
    field, with or without a default (utkface, folder, most plugins).
    "draws": it writes images there, as `synthetic` does; a dataset class says
    so with `draws_images = True`. "none": it has no `root` parameter, so
    `--data` cannot point it at a folder; `--set data.KEY=...` sets what it reads.
    """
    owner = getattr(entry.factory, "__self__", entry.factory)  # a class, or a classmethod's class
    if getattr(owner, "draws_images", False):
        return "draws"
    params = entry.params
    return "reads" if params is not None and "root" in params.model_fields else "none"


def no_root_message(entry: Any, option: str, origin: str = "") -> str:
    """Why data.root=DIR cannot be evaluated with a dataset that has no `root` parameter, and what to do.

    `origin`: its plugin as messages name it (`describe_plugin`), else just the plugin's name.
    """
    fields = sorted(entry.params.model_fields) if entry.params is not None else []
    asked = "--data DIR (data.root=DIR)" if option.startswith("-") else "data.root=DIR"
    setting = "--set data.KEY=VALUE" if option.startswith("-") else "evaluate('data.KEY=VALUE')"
    replace = ("--set 'data={name: folder, root: DIR}'" if option.startswith("-")
               else "evaluate('data={name: folder, root: DIR}')")
    return (f"{asked} needs a dataset that reads the folder its `root` parameter names; the model's dataset "
            f"'{entry.name}' from {origin or describe_plugin(entry.plugin)} has no `root` parameter"
            + (f" (its parameters: {', '.join(fields)})" if fields else " (it takes no parameters)")
            + f". Set the parameter it reads its data from with {setting}, or read DIR in a built-in format by "
            f"replacing the data section: {replace} (images and a labels.csv), or the same with name utkface "
            "(labels in the file names). A plugin author names the dataset's folder parameter `root` to make "
            "--data work")


__all__ = ["check_data_overrides", "folder_role", "no_root_message"]
