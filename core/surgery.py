"""Model surgery: start from a trained model, freeze parts, give parts their own learning rate.

The point of a HydraNet is that heads are independent: a new task joins a
trained model without retraining the others, and one head can be fine-tuned
while everything else stays exactly as it was. `init_from` loads the backbone
and every head whose task is in both the checkpoint and the spec; `freeze`
turns off gradients, optimizer state and batch-norm statistic updates for
the backbone or named heads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hydranet.core.checkpoint import not_a_torch_file, read_checkpoint
from hydranet.core.errors import CheckpointError
from hydranet.core.interfaces import Task
from hydranet.core.model import HydraNet

BACKBONE = "backbone"


def part_modules(model: HydraNet, names: Iterable[str]) -> dict[str, nn.Module]:
    """Spec part names ("backbone" or a task name) -> the module they mean."""
    return {name: model.backbone if name == BACKBONE else model.heads[name] for name in names}


def freeze(model: HydraNet, names: Iterable[str]) -> None:
    """No gradient and fixed batch-norm statistics for these parts (see `HydraNet.train`)."""
    for name, module in part_modules(model, names).items():
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        model.frozen.add(name)
    model.train(model.training)


def init_from_problem(path: str | Path | None) -> str | None:
    """Why `init_from` cannot be used (None: it can), checked before any data is read (and by spec validate)."""
    if path is None:
        return None
    checkpoint = Path(path)
    if checkpoint.is_file():
        stranger = not_a_torch_file(checkpoint)  # a spec file, say: its first bytes tell, cheaply
        return f"init_from: {path}: {stranger}" if stranger else None
    what = "is a folder" if checkpoint.is_dir() else "was not found"
    return (f"init_from: checkpoint {path} {what}; give a run's best.pt or last.pt, as a path from the folder "
            "you run hydranet in")


def _state_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """The differences between a module's tensors and a saved state, in words (torch's first line names a class)."""
    own = module.state_dict()
    reshaped = [n for n, t in own.items() if n in state and tuple(state[n].shape) != tuple(t.shape)]
    if reshaped:
        first = reshaped[0]
        more = f" ({len(reshaped) - 1} more differ)" if len(reshaped) > 1 else ""
        return f"{first} has shape {tuple(own[first].shape)} here but {tuple(state[first].shape)} in the checkpoint{more}"

    def listed(names: list[str]) -> str:
        return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")

    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    parts = [f"missing from the checkpoint: {listed(missing)}"] if missing else []
    parts += [f"not in this backbone: {listed(unexpected)}"] if unexpected else []
    return "; ".join(parts) or "the tensors differ"


def load_initial_weights(model: HydraNet, tasks: Sequence[Task], path: str | Path,
                         log: Callable[[str], None]) -> set[str]:
    """Load the backbone and the shared tasks' heads from a checkpoint; return the tasks loaded.

    A task is loaded when the checkpoint has a head of that name with the same
    parameter shapes; its fitted task state (e.g. the label standardisation)
    comes along, so the head predicts exactly as before.
    """
    data = read_checkpoint(path)
    state: Mapping[str, torch.Tensor] = data["model"]
    backbone_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    try:
        model.backbone.load_state_dict(backbone_state)
    except RuntimeError:
        raise CheckpointError(
            f"init_from {path}: its backbone ({data['spec']['backbone']['name']}) does not fit this spec's "
            f"backbone: {_state_mismatch(model.backbone, backbone_state)}. Use the same backbone and parameters "
            "as that run."
        ) from None
    saved_heads = {t["name"] for t in data["tasks"]}
    loaded, fresh, unfit = [], [], []
    for task in tasks:
        head = model.heads[task.name]
        prefix = f"heads.{task.name}."
        head_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if task.name in saved_heads and _same_shapes(head, head_state):
            task.load_state_dict(data.get("task_state", {}).get(task.name, {}))
            head.load_state_dict(head_state)
            loaded.append(task.name)
        else:
            fresh.append(task.name)
            if task.name in saved_heads:  # the checkpoint has it, but the spec redefined it (hidden, classes, ...)
                unfit.append(f"warning: head '{task.name}' of the checkpoint does not fit: its shapes differ "
                             f"({_head_shapes(head_state)} in the checkpoint vs {_head_shapes(head.state_dict())} "
                             "in this spec); it starts from random weights")
    dropped = sorted(saved_heads - {t.name for t in tasks})
    log(f"init_from {path}: backbone loaded; heads loaded: {', '.join(loaded) or 'none'}; "
        f"new heads: {', '.join(fresh) or 'none'}; dropped (not in the spec): {', '.join(dropped) or 'none'}")
    for line in unfit:
        log(line)
    return set(loaded)


def _head_shapes(state: Mapping[str, torch.Tensor]) -> str:
    """A head's weight shapes, in layer order: `0.weight (1, 8)`; the biases follow from them."""
    weights = [f"{name} {tuple(t.shape)}" for name, t in state.items() if name.endswith("weight")] or \
        [f"{name} {tuple(t.shape)}" for name, t in state.items()]
    return ", ".join(weights[:4]) + (" ..." if len(weights) > 4 else "") or "no tensors"


def _same_shapes(module: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def parameter_groups(model: HydraNet, lr: float, weight_decay: float, backbone_lr: float | None,
                     head_lr: float | Mapping[str, float] | None) -> list[dict[str, Any]]:
    """Optimizer groups: the backbone and each head with its own learning rate; frozen parts left out."""
    groups = []
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    if backbone:
        groups.append({"params": backbone, "lr": lr if backbone_lr is None else backbone_lr,
                       "weight_decay": weight_decay, "name": BACKBONE})
    for name, head in model.heads.items():
        params = [p for p in head.parameters() if p.requires_grad]
        if not params:
            continue
        rate = head_lr.get(name, lr) if isinstance(head_lr, Mapping) else (lr if head_lr is None else head_lr)
        groups.append({"params": params, "lr": rate, "weight_decay": weight_decay, "name": f"head.{name}"})
    return groups
