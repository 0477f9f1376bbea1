"""Rebuilding a trained model from a checkpoint: its stored spec, resolved here, and checks of what it stores.

Kept apart from inference.py, which uses the rebuilt model: these say why
a checkpoint does not load (a spec the installed plugins do not resolve,
weights that do not fit, stored baselines of the wrong length) and how
`device=` is read, before any model exists.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hydranet.core.checkpoint import dataset_stand_in, inference_components, with_stand_ins
from hydranet.core.checkpoint_checks import BASELINES
from hydranet.core.device import pick_device
from hydranet.core.errors import CheckpointError, InputError, SpecError
from hydranet.core.image_input import given
from hydranet.core.interfaces import Task
from hydranet.core.plugins import Components
from hydranet.core.spec import ResolvedSpec, load_spec
from hydranet.core.values import is_whole_number
from hydranet.core.wording import plural


#: backbone parameters that load starting weights from a file (torch's cache, or a path), and their "none" values
WEIGHT_LOADING = {"pretrained": False, "weights": None}


def spec_without_weight_loading(spec: dict[str, Any]) -> dict[str, Any]:
    """The weights come from the checkpoint: never load (or look for) pretrained files again."""
    backbone = dict(spec.get("backbone", {}))
    backbone.update({key: off for key, off in WEIGHT_LOADING.items() if key in backbone})
    return {**spec, "backbone": backbone}


def resolved_without_weight_loading(spec: ResolvedSpec) -> ResolvedSpec:
    """`spec` building its backbone without its starting weights, for a run whose weights come from elsewhere.

    A resumed run's are last.pt's, and init_from's replace the backbone's: loading the
    pretrained file first only fails where it is gone (another machine, a cleared torch
    cache, a relative `weights:` path resumed from another folder). The spec itself, which
    the run records, is unchanged.
    """
    params = spec.backbone.params
    if params is None or not any(key in type(params).model_fields for key in WEIGHT_LOADING):
        return spec
    off = {key: value for key, value in WEIGHT_LOADING.items() if key in type(params).model_fields}
    return dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, params=params.model_copy(update=off)))


def resolve_checkpoint_spec(path: Path, data: dict[str, Any],
                             components: Components) -> tuple[ResolvedSpec, Components]:
    """The stored spec, resolved with the plugins a trained model needs, and the components it resolved with.

    A data section that the installed dataset plugin no longer takes (its
    parameters changed) blocks only evaluating on the stored data, as a
    missing dataset plugin does.
    """
    components = inference_components(path, data, components)
    spec = spec_without_weight_loading(data["spec"])
    try:
        return load_spec(spec, components=components), components
    except SpecError as error:
        problems = error.problems
    name = spec.get("data", {}).get("name") if isinstance(spec.get("data"), dict) else None
    if isinstance(name, str) and problems and all(p.startswith("data.") for p, _ in problems):
        why = (f"the data section stored in {path} does not resolve with dataset '{name}' as installed here: "
               + "; ".join(f"{p}: {m}" for p, m in problems))
        components = with_stand_ins(components, None, dataset_stand_in(name, why))
        try:
            return load_spec(spec, components=components), components
        except SpecError as error:
            problems = error.problems
    raise CheckpointError(f"the spec stored in {path} does not resolve with the plugins installed here:\n"
                          + "\n".join(f"  {p}: {m}" for p, m in problems))


def device_argument(device: Any) -> torch.device:
    """`device=` as a str ("auto", "cpu", "cuda:1"), a torch.device or a CUDA index, checked by `pick_device`."""
    if is_whole_number(device):
        device = f"cuda:{device}"  # torch's meaning of a bare index
    elif isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise InputError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps', a torch.device or a CUDA "
                         f"index; got {given(device)}")
    return pick_device(device, option="device")


def check_stored_baselines(path: Path, data: dict[str, Any], tasks: Sequence[Task]) -> None:
    """Refuse stored baselines (`BASELINES`) that do not fit the task heads: `evaluate` would score a constant of
    the wrong length, or fail naming nothing, so the file is named as altered instead."""
    stored = data.get(BASELINES) or {}
    for task in tasks:
        if stored.get(task.name) is not None and len(stored[task.name]) != task.out_features:
            raise CheckpointError(f"{path}: '{BASELINES}' holds {plural(len(stored[task.name]), 'value')} for "
                                  f"task '{task.name}', whose head outputs {task.out_features}; the file was "
                                  "altered")


def state_dict_mismatch(error: RuntimeError, limit: int = 5) -> str:
    """The informative lines of load_state_dict's error (which weights are missing, extra, or misshapen)."""
    lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    details = []
    for line in lines:
        details += [part.strip() + ("." if not part.strip().endswith(".") else "") for part in line.split(". ")
                    if part.strip()]
    shown = details[:limit] or [str(error).splitlines()[0]]
    more = f"\n  ... and {len(details) - limit} more" if len(details) > limit else ""
    return "\n".join(f"  {line}" for line in shown) + more
