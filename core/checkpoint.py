"""Checkpoints: atomic save, safe load, the resolved spec embedded.

A checkpoint holds only tensors and plain data, so it loads with
`weights_only=True` (no pickle code runs). It embeds the resolved spec and
each task's plugin, so `hydranet.load` can rebuild the model without the
original spec file and can say which plugin is missing when one is.
Writes go to a temporary file that is flushed, fsynced and renamed over the
old one: a crash mid-write leaves the previous checkpoint intact.

The files `hydranet export` writes beside a checkpoint (best.onnx,
best.ts.pt, best.pt2) are recognised before torch.load sees them: loading
them would fail with torch's misleading complaint (pickled code, a corrupt
zip), so the message says what the file is and which checkpoint to pass.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hydranet.core.atomic import atomic_file
from hydranet.core.errors import CheckpointError
from hydranet.core.export import SUFFIX

FORMAT = "hydranet-checkpoint"
FORMAT_VERSION = 1


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` over `path` in one step (see `hydranet.core.atomic`)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and sanity-check a checkpoint file; every failure names the file."""
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint must be a path (str or pathlib.Path); got {type(path).__name__} "
                              f"{path!r:.60}")
    path = Path(path)
    if path.is_dir():
        found = checkpoints_in(path)
        what = "a run folder" if (path / "spec.yaml").is_file() else "a folder"
        if found:
            raise CheckpointError(f"{path} is {what}, not a checkpoint; pass one of its checkpoints: "
                                  + ", ".join(map(str, found)))
        raise CheckpointError(f"{path} is {what} with no checkpoint in it; pass a checkpoint file "
                              "(a finished run's folder keeps last.pt and best.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}.")
    exported = _export_kind(path)
    if exported:
        raise _export_passed(path, exported)
    stranger = not_a_torch_file(path)
    if stranger:
        raise CheckpointError(f"cannot read checkpoint {path}: {stranger}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if path.name.endswith(SUFFIX["onnx"]):  # protobuf has no signature; a failed load plus the name will do
            raise _export_passed(path, "onnx") from None
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_failure(error)}. Use another checkpoint "
                              "(a run folder keeps last.pt and best.pt).") from None
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a hydranet checkpoint (no '{FORMAT}' marker); "
                              "was it written by another program?")
    version = data.get("format_version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: format_version is {version!r}, not a number; the file was altered")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer hydranet (checkpoint format "
                              f"{version}); upgrade hydranet to read it")
    for key, problem in _structure_problems(data):
        raise CheckpointError(f"{path}: '{key}' {problem}; the file is incomplete or was altered")
    return dict(data)


def checkpoints_in(folder: Path) -> list[Path]:
    """The checkpoints a folder holds: its .pt files, less exports (best.ts.pt) and half-written temporaries."""
    return sorted(p for p in folder.glob("*.pt") if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(SUFFIX["torchscript"]) and _export_kind(p) is None)


_EXPORT_KINDS = {"onnx": "an exported ONNX model", "torchscript": "an exported TorchScript model",
                 "exported": "an exported torch.export program"}


def _export_kind(path: Path) -> str | None:
    """"torchscript" or "exported" for those zip archives, by their member names; None for anything else.

    A checkpoint's archive holds data.pkl and data/; TorchScript adds code/
    and constants.pkl (what torch.load itself looks for before handing the
    file to torch.jit.load, with a warning); a torch.export program holds
    models/ and archive_format instead of data.pkl. Reading the zip's
    directory is cheap: the member data is not read.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.split("/", 1)[-1] for name in archive.namelist()}
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if "constants.pkl" in members or any(name.startswith("code/") for name in members):
        return "torchscript"
    if "archive_format" in members or any(name.startswith("models/") for name in members):
        return "exported"
    return None


def _export_passed(path: Path, fmt: str) -> CheckpointError:
    """An export file passed as a checkpoint: say what it is, and which checkpoint it came from when it is beside it."""
    ours = ""
    if fmt != "onnx":
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/extra/hydranet.json") for name in archive.namelist()):
                ours = " (written by hydranet export)"
    source = None
    if path.name.endswith(SUFFIX[fmt]):
        source = path.with_name(path.name[:-len(SUFFIX[fmt])] + ".pt")
    way_out = (f"pass {source}" if source and source != path and source.is_file()
               else "pass the .pt checkpoint it was exported from (a run folder keeps last.pt and best.pt)")
    return CheckpointError(f"{path} is {_EXPORT_KINDS[fmt]}{ours}, not a hydranet checkpoint; {way_out}")


#: how the files torch.save writes begin: a zip archive, or (before torch 1.6) a pickle of protocol 2 or newer
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
_SPEC_SUFFIXES = (".yaml", ".yml", ".toml")
_WHAT_TO_PASS = "pass a .pt file written by hydranet train (a run folder keeps last.pt and best.pt)"


def not_a_torch_file(path: Path) -> str | None:
    """Why `path` is no checkpoint, when its first bytes show torch.save did not write it; None when it may be one.

    torch.load would fail on it with an internal error (a YAML spec gives
    "IndexError: pop from empty list"), which says nothing to the user. An
    empty file and an ONNX export are left to the checks after torch.load.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return None  # torch.load reports it
    if not head or head.startswith(_TORCH_MAGIC) or path.name.endswith(SUFFIX["onnx"]):
        return None
    if path.suffix.lower() in _SPEC_SUFFIXES:
        return (f"it is a spec file, not a checkpoint: train it first (hydranet train {path}) and pass the "
                "best.pt or last.pt of the run folder that writes")
    return f"it is not a checkpoint (torch.save did not write it); {_WHAT_TO_PASS}"


def _load_failure(error: Exception) -> str:
    """Why torch.load refused, without torch's advice to disable the safety check."""
    if isinstance(error, EOFError) or "EOF" in str(error):
        return "the file is empty or cut short"
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
        return ("it contains Python objects other than tensors and plain data, which hydranet never loads "
                "(loading them could run code)")
    if "PytorchStreamReader" in str(error):  # the zip is cut short or damaged; torch's paragraph says no more
        return "the file is truncated or damaged (its archive cannot be read)"
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first} (the file is truncated, damaged, or not a hydranet checkpoint)"


#: key -> (expected type, description) of what `hydranet.load` relies on
_REQUIRED: dict[str, tuple[type, str]] = {
    "spec": (Mapping, "a mapping"),
    "model": (Mapping, "a mapping of tensors"),
    "tasks": (list, "a list of tasks"),
    "preprocess": (Mapping, "a mapping (image_size, mean, std)"),
}


def _structure_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for key, (kind, description) in _REQUIRED.items():
        if key not in data:
            problems.append((key, "is missing"))
        elif not isinstance(data[key], kind):
            problems.append((key, f"is not {description}"))
    if problems:
        return problems
    if not all(isinstance(v, torch.Tensor) for v in data["model"].values()):
        problems.append(("model", "holds values that are not tensors"))
    for index, task in enumerate(data["tasks"]):
        if not isinstance(task, Mapping) or not {"name", "kind", "plugin", "distribution"} <= set(task):
            problems.append((f"tasks[{index}]", "lacks name, kind, plugin or distribution"))
    if not {"image_size", "mean", "std"} <= set(data["preprocess"]):
        problems.append(("preprocess", "lacks image_size, mean or std"))
    return problems


def load(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a trained model from a checkpoint: `hydranet.load(CKPT).predict(images)`."""
    from hydranet.core.inference import TrainedModel

    return TrainedModel.from_checkpoint(path, device=device)
