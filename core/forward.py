"""The model a spec describes, and the functions a training step runs on it.

The run and the background compiler (`hydranet.core.background_compile`)
both build their graphs here, so that the compiler's cache keys of the two
agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from hydranet.core.device import RunSettings
from hydranet.core.errors import TrainingError
from hydranet.core.interfaces import Task
from hydranet.core.model import HydraNet, build_model
from hydranet.core.plugins import Components
from hydranet.core.spec import ResolvedSpec
from hydranet.core.surgery import freeze


def spec_model(spec: ResolvedSpec, tasks: Sequence[Task]) -> HydraNet:
    """The spec's backbone with a head for each of the (already built) tasks."""
    return build_model(spec.backbone.build(), tasks)


def compile_static(function: Callable, settings: RunSettings) -> Callable:
    """torch.compile with static shapes (`dynamic=False`), the one way the run and its background compiler compile.

    A run's shapes are fixed (the ragged last batch is dropped, evaluation pads),
    and static graphs are the fastest and the only ones CUDA graphs record
    without guards on sizes. torch's default instead turns a dimension dynamic
    once the same code was compiled at another size in the process, as a
    second run in one Python session does, and the graphs would no longer be
    those the background compiler put in the cache.
    """
    return torch.compile(function, mode=settings.compile_mode, dynamic=False)


def make_forward_losses(model: HydraNet, tasks: Sequence[Task], settings: RunSettings, needs_features: bool,
                        *, compile: bool) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]:
    """images, targets -> (losses, features), compiled or not.

    Loss-based weightings get one fused graph (model and losses together, so
    their small kernels fuse) and no features. Weightings that read the shared
    representation get two graphs, backbone and heads+losses, so the
    representation is a real tensor their gradients can stop at. The run and
    the background compiler (`hydranet.core.background_compile`) both build
    their graphs here, so that the compiler's cache keys of the two agree.
    """
    compile_ = (lambda f: compile_static(f, settings)) if compile else (lambda f: f)

    if not needs_features:
        def fused(images: Tensor, targets: Tensor) -> Tensor:
            with settings.autocast():
                outputs = model(images)
            return task_losses(tasks, outputs, targets)

        compiled = compile_(fused)
        return lambda images, targets: (compiled(images, targets), None)

    def backbone(images: Tensor) -> Tensor:
        with settings.autocast():
            return model.features(images)

    def heads(features: Tensor, targets: Tensor) -> Tensor:
        with settings.autocast():
            outputs = model.heads_forward(features)
        return task_losses(tasks, outputs, targets)

    backbone, heads = compile_(backbone), compile_(heads)

    def split(images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        features = backbone(images)
        return heads(features, targets), features

    return split


def model_for_settings(spec: ResolvedSpec, tasks: Sequence[Task], settings: RunSettings) -> HydraNet:
    """The spec's model with its frozen parts, on the device and in the memory format the settings say."""
    model = spec_model(spec, tasks)
    if spec.spec.freeze:
        freeze(model, spec.spec.freeze)
    model = model.to(settings.device)
    return model.to(memory_format=torch.channels_last) if settings.channels_last else model


def task_losses(tasks: Sequence[Task], outputs: Mapping[str, Tensor], targets: Tensor) -> Tensor:
    """(K,) per-task losses, in task order, each masked to its labelled rows."""
    return torch.stack([task.loss(outputs[task.name], targets[:, k]) for k, task in enumerate(tasks)])


def check_heads(model: HydraNet, tasks: Sequence[Task], spec: ResolvedSpec, components: Components) -> None:
    """Run every head once on dummy features: a head of the wrong shape is named with its plugin now,
    not as a broadcasting error deep inside a loss."""
    features = torch.zeros(2, int(getattr(model.backbone, "out_features")), device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for resolved, task in zip(spec.tasks, tasks):
                try:
                    output = model.heads[task.name](features)
                    problem = None if tuple(output.shape) == (2, task.out_features) else (
                        f"returned shape {tuple(output.shape)} for 2 samples; expected (2, {task.out_features})")
                except Exception as error:  # a plugin's head may raise anything
                    problem = f"raised {type(error).__name__}: {error}"
                if problem:
                    plugin = resolved.component.entry.plugin
                    info = components.pm.info.get(plugin)
                    origin = f"plugin '{plugin}'" + (f" ({info.distribution} {info.version})" if info else "")
                    raise TrainingError(f"the head of task '{task.name}' from {origin} {problem}. "
                                        "Fix the task's build_head/out_features, or leave the task out of the spec.")
    finally:
        model.train(was_training)
