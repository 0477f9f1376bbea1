"""Which data a trained model may be evaluated on, and the spec `TrainedModel.evaluate` reads it with.

`TrainedModel.evaluate` and `hydranet eval` take overrides of the data
section alone (the model and its training settings come from the
checkpoint), and a folder given as `data.root` is read, drawn into or
refused depending on the dataset (`folder_role`). With no `data.root`
given, the stored one is the folder the run read (`root_as_run_read`), and
when that is not found the message says where the run read it from
(`missing_data_message`). Kept out of `inference.py`, which uses the model
once this has chosen its data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydranet.core.checkpoint import UnavailableDataset, with_stand_ins
from hydranet.core.errors import DataError, InputError
from hydranet.core.overrides import override_list
from hydranet.core.paths import MissingPathError
from hydranet.core.plugins import Components, default_components
from hydranet.core.registry import describe_plugin
from hydranet.core.spec import ResolvedSpec, load_spec
from hydranet.core.spec_models import DataSection

if TYPE_CHECKING:
    from hydranet.core.inference import TrainedModel

#: what evaluating on another folder reads it as when the model's dataset draws its images (synthetic) instead
FOLDER_FORMAT = "utkface"


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


def evaluation_spec(model: "TrainedModel", overrides: tuple[str, ...], components: Components | None,
                    option: str) -> tuple[ResolvedSpec, str]:
    """The spec `model.evaluate` reads its data with, and a note on that choice ("" when there is nothing to say).

    `overrides` are checked already (`check_data_overrides`). A stored
    dataset whose plugin is not here is refused with the ways out: it is
    never swapped for another.
    """
    spec, note = data_spec(model, overrides, components, option)
    if not {item.partition("=")[0].strip() for item in overrides} & {"data", "data.root"}:
        spec, moved = root_as_run_read(model, spec, components, option)
        note = "; ".join(filter(None, [note, moved]))
    stand_in = spec.data.entry.factory
    if isinstance(stand_in, UnavailableDataset):  # the stored dataset, whose plugin is not here
        raise DataError(stand_in.explain(option))
    return spec, note


def data_spec(model: "TrainedModel", overrides: tuple[str, ...], components: Components | None,
              option: str = "overrides") -> tuple[ResolvedSpec, str]:
    """The model's stored spec changed by checked `data.*` overrides, and a note.

    `data.root=DIR` is another folder in the same format: the model's
    dataset takes DIR as its `root` parameter (`folder_role`). A model
    whose dataset draws its images (`synthetic` draws them into `root`,
    which evaluating must never do) reads DIR as a UTKFace folder, labels
    in the file names, keeping the shared data settings (val_fraction,
    split_seed, ...); the note says so. A dataset that has no `root`
    parameter, or whose plugin is not installed, is refused with the ways
    out: it is never swapped for another. Naming the dataset too
    (`data.name=folder`) keeps the stored section instead. Problems name
    the overrides as `option`.
    """
    if not overrides:
        return model.spec, ""
    raw = model.spec.to_dict()
    keys = {item.partition("=")[0].strip() for item in overrides}
    components = evaluation_components(model, components)
    note = ""
    if "data.root" in keys and not keys & {"data", "data.name"}:
        entry = model.spec.data.entry
        role = folder_role(entry)
        if isinstance(entry.factory, UnavailableDataset):
            raise DataError(entry.factory.explain(option))
        if role == "none":
            raise DataError(no_root_message(entry, option, model.spec.data.origin))
        if role == "draws":
            raw["data"] = {"name": FOLDER_FORMAT, **{k: v for k, v in raw["data"].items()
                                                     if k in DataSection.model_fields and k != "name"}}
            note = (f"dataset '{entry.name}' draws its images instead of reading a folder, so data.root is read "
                    f"as a '{FOLDER_FORMAT}' folder (labels in the file names)")
    spec = load_spec(raw, overrides, components, option=option)
    root = getattr(spec.data.params, "root", None)
    if "data.root" in keys and folder_role(spec.data.entry) == "reads" and not Path(str(root)).is_dir():
        labels = " (labels in the file names)" if spec.data.entry.name == FOLDER_FORMAT else ""
        raise DataError(f"{root} is not a folder: data.root names an existing folder of images to evaluate "
                        f"on, read as a '{spec.data.entry.name}' dataset{labels}")
    return spec, note


def root_as_run_read(model: "TrainedModel", spec: ResolvedSpec, components: Components | None,
                     option: str) -> tuple[ResolvedSpec, str]:
    """`spec` with a relative stored `data.root` counted from the folder the model's run started in, and a note.

    A relative root means the folder the run read, which the checkpoint
    records (`started_in`); read from the current folder instead, it may
    be another folder of the same name, and the metrics would be of other
    data without a word (its val split would even hold images the model
    trained on). So the run's folder is evaluated, and when the current
    folder has one of that name too, the note names both and how to
    evaluate the other (--data). When the run's folder is gone, the
    current folder's is read, and the note says so; when neither exists,
    loading says so (`missing_data_message`). A checkpoint that does not
    record where its run started keeps the current folder's meaning.
    """
    root = getattr(spec.data.params, "root", None)
    started_in = model.started_in
    if not isinstance(root, (str, os.PathLike)) or not started_in:
        return spec, ""
    stored = Path(root).expanduser()
    if stored.is_absolute():
        return spec, ""
    run_read, here = Path(started_in) / stored, Path.cwd() / stored
    if not run_read.exists():
        if here.exists() and Path(started_in) != Path.cwd():
            return spec, (f"the folder this model's run read, {run_read} (its data.root {str(stored)!r} counts "
                          f"from {started_in}, where the run started), no longer exists; evaluating "
                          f"{here} in the current folder instead, which may hold other images")
        return spec, ""
    if here.exists() and os.path.samefile(here, run_read):
        return spec, ""
    raw = spec.to_dict()
    raw["data"] = {**raw["data"], "root": str(run_read)}
    spec = load_spec(raw, components=evaluation_components(model, components), option=option)
    if not here.exists():
        return spec, ""
    other = (f"hydranet eval {model.path or 'CKPT'} --data {stored}" if option == "--set"
             else f"evaluate(\"data.root={stored}\")")
    return spec, (f"data.root {str(stored)!r} is relative to the folder this model's run started in, "
                  f"{started_in}: evaluating {run_read}, the data it trained on, not {here} of the same "
                  f"name in the current folder. To evaluate that one instead: {other}")


def missing_data_message(model: "TrainedModel", missing: MissingPathError, option: str) -> str:
    """The model's own data not found: with a relative path, say where its run read it from, and the ways out.

    A relative `data.root` counts from the folder the run started in (the
    checkpoint records it); evaluating from another folder misses it.
    """
    started_in = model.started_in
    said = f"{missing.what} {missing.path} {missing.state}"
    where = Path(started_in) / missing.path if started_in else None
    if missing.path.is_absolute() or where is None or Path(started_in or "") == Path.cwd():
        return str(missing)
    found = "is there" if where.exists() else "is not there either"
    other = (f"hydranet eval {model.path or 'CKPT'} --data {where}" if option == "--set"
             else f"evaluate(\"data.root={where}\")")
    return (f"{said} in {Path.cwd()}: this model's spec names it relative to the folder its run started in, "
            f"{started_in}, where it {found} ({where}). Evaluate from there (cd {started_in}), or "
            f"name the folder: {other}")


def evaluation_components(model: "TrainedModel", components: Components | None) -> Components:
    """`components` (default: the model's own, else the installed ones) with its stand-ins for weighting and dataset.

    The stored spec is re-resolved with them, so a weighting or dataset
    whose plugin is not here must resolve to the stand-in the model was
    loaded with, and a name several plugins claim to the plugin it resolved to.
    """
    if components is None:
        return model.components or default_components()
    spec = model.spec
    dataset = spec.data.entry
    return with_stand_ins(components, spec.weighting.entry,
                          dataset if isinstance(dataset.factory, UnavailableDataset) else None,
                          resolved_plugins(spec))


def resolved_plugins(spec: ResolvedSpec) -> dict[str, dict[str, str]]:
    """The plugin each of a spec's components resolved to: the one a name several plugins claim keeps."""
    return {"tasks": {t.component.entry.name: t.component.entry.plugin for t in spec.tasks},
            "backbones": {spec.backbone.entry.name: spec.backbone.entry.plugin},
            "datasets": {spec.data.entry.name: spec.data.entry.plugin}}


__all__ = ["FOLDER_FORMAT", "check_data_overrides", "data_spec", "evaluation_components", "evaluation_spec",
           "folder_role", "missing_data_message", "no_root_message", "resolved_plugins", "root_as_run_read"]
