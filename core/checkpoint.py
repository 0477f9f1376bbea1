"""Checkpoints: atomic save, safe load, the resolved spec embedded.

A checkpoint holds only tensors and plain data, so it loads with
`weights_only=True` (no pickle code runs). It embeds the resolved spec and
each task's plugin, so `hydranet.load` can rebuild the model without the
original spec file and can say which plugin is missing when one is.
Writes go to a temporary file that is flushed, fsynced and renamed over the
old one: a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hydranet.core.atomic import atomic_file
from hydranet.core.errors import CheckpointError

FORMAT = "hydranet-checkpoint"
FORMAT_VERSION = 1


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` over `path` in one step (see `hydranet.core.atomic`)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and sanity-check a checkpoint file; every failure names the file."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.is_dir():
            found = sorted(p.name for p in path.glob("*.pt"))
            hint = f" It is a folder; pass one of its checkpoints: {', '.join(found)}" if found else " It is a folder."
        raise CheckpointError(f"checkpoint not found: {path}.{hint}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
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


def _load_failure(error: Exception) -> str:
    """Why torch.load refused, without torch's advice to disable the safety check."""
    if isinstance(error, EOFError) or "EOF" in str(error):
        return "the file is empty or cut short"
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
        return ("it contains Python objects other than tensors and plain data, which hydranet never loads "
                "(loading them could run code)")
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
