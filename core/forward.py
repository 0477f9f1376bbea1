"""The model a spec describes, and the functions a training step runs on it.

The run and the background compiler (`hydranet.core.background_compile`)
both build their graphs here, so that the compiler's cache keys of the two
agree.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from hydranet.core.device import RunSettings
from hydranet.core.interfaces import Task, label_mask, labels_or_zero
from hydranet.core.plugin_calls import PluginCall, Provenance, provenance, shape_problem
from hydranet.core.model import HydraNet, build_model
from hydranet.core.spec import ResolvedSpec
from hydranet.core.surgery import freeze


def spec_model(spec: ResolvedSpec, tasks: Sequence[Task]) -> HydraNet:
    """The spec's backbone with a head for each of the (already built) tasks."""
    return build_model(spec.backbone.build(), tasks)


#: whether a run in this process has compiled already (see `fresh_compiler`)
_compiled_before = False


def fresh_compiler() -> None:
    """Forget what earlier runs in this process compiled, before this run compiles its functions.

    dynamo keeps the graphs it compiled with the code they came from, and a
    run's step functions share their code with every earlier run's in the
    process (a sweep, a notebook that trains twice). Past dynamo's limit of
    recompilations (8) a later run would silently train uncompiled, and the
    earlier runs' graphs, CUDA graph memory pools included, would stay alive.
    Those runs are over, so their graphs can go. The first compiled run of a
    process resets nothing, so a single run leaves the rest of the process's
    compiled code alone; from the second on, other compiled code in the
    process compiles again when next called.
    """
    global _compiled_before
    if _compiled_before:
        torch._dynamo.reset()
    _compiled_before = True


def compile_static(function: Callable, settings: RunSettings) -> Callable:
    """torch.compile with static shapes (`dynamic=False`), the one way the run and its background compiler compile.

    A run's shapes are fixed (the ragged last batch is dropped, evaluation pads),
    and static graphs are the fastest and the only ones CUDA graphs record
    without guards on sizes. torch's default instead turns a dimension dynamic
    once the same code was compiled at another size in the process, as a
    second run in one Python session does, and the graphs would no longer be
    those the background compiler put in the cache.
    """
    if settings.device.type != "cuda":
        _import_cpp_extension_quietly()
    return torch.compile(function, mode=settings.compile_mode, dynamic=False)


#: what torch.utils.cpp_extension logs, when imported, on a machine with a CUDA toolkit but no CUDA runtime (a
#: CPU run's compile imports it): true, and no concern of a run that compiles for the CPU
NO_CUDA_RUNTIME = "No CUDA runtime is found, using CUDA_HOME="


class _DropMessage(logging.Filter):
    """Drops the records whose message begins with `prefix`, and only those."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _import_cpp_extension_quietly() -> None:
    """Import torch.utils.cpp_extension (the CPU compile imports it on its first step) without its
    NO_CUDA_RUNTIME line, which it logs once, at import, through its logger (not `warnings`)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    drop = _DropMessage(NO_CUDA_RUNTIME)
    logger.addFilter(drop)
    try:
        importlib.import_module("torch.utils.cpp_extension")
    finally:
        logger.removeFilter(drop)


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


#: rows of the dummy batch `check_heads` runs; the second one has no label
DUMMY_ROWS = 2
BACKBONE_FIX = ("Make the backbone's forward return flat features (N, out_features), pooling spatial maps "
                "(nn.AdaptiveAvgPool2d(1), then nn.Flatten()), and set out_features to their width; "
                "or use another backbone")
HEAD_FIX = "Fix the task's build_head/out_features, or leave the task out of the spec"
LOSS_FIX = ("Return one loss per row, shape (N,), as a float tensor (for example reduction='none'), not their mean "
            "nor an (N, 1) column: hydranet masks the rows without a label and averages the rest. Or leave the "
            "task out of the spec")


def check_heads(model: HydraNet, tasks: Sequence[Task], spec: ResolvedSpec) -> int | None:
    """Run the model once on a dummy batch before training, and name whatever breaks its contract, with its plugin.

    The backbone sees two blank images of the run's size and must give (2, out_features); every head must give
    (2, its out_features) on those features; every task's loss runs on its head's output with the targets the
    data would give (float32, NaN for a missing label), and `per_sample_loss` must give one float per row.
    Without this a wrong width fails as a matrix-product error naming nothing, and a scalar or (N, 1)
    per-sample loss trains on with wrong values (an (N, 1) loss broadcasts against the (N,) mask).

    Returns the fewest values per channel one image gives a batch-norm layer that trains (a 1x1 map at a
    small image size: 1), or None without one: a training batch needs more than one value per channel
    (`batch_norm_problem`).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.train()  # which batch norms train: a frozen part's keep theirs fixed (`freeze`)
    training_norms = [module for module in model.modules()
                      if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training]
    per_image: list[int] = []
    hooks = [module.register_forward_pre_hook(
        lambda module, inputs: per_image.append(inputs[0].numel() // max(1, inputs[0].shape[0] * inputs[0].shape[1]))
    ) for module in training_norms]
    size = spec.spec.image_size
    images = torch.zeros(DUMMY_ROWS, 3, size, size, device=device)
    width = int(getattr(model.backbone, "out_features"))
    targets = torch.tensor([0.0] * (DUMMY_ROWS - 1) + [float("nan")], device=device)
    model.eval()
    try:
        with torch.no_grad():
            features = PluginCall("", provenance(model.backbone, "backbone"), BACKBONE_FIX)(
                model.backbone, images,
                check=lambda out: shape_problem(out, (DUMMY_ROWS, width), f"{DUMMY_ROWS} images of {size}x{size} px"))
            for task in tasks:
                who = provenance(task, "task")
                output = PluginCall("the head of", who, HEAD_FIX)(
                    model.heads[task.name], features,
                    check=lambda out: shape_problem(out, (DUMMY_ROWS, task.out_features), f"{DUMMY_ROWS} samples"))
                _check_loss(task, who, output, targets)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return min(per_image) if per_image else None


def batch_norm_problem(values_per_image: int | None, batch: int, size: int) -> str | None:
    """Why a training batch of `batch` images (per process) cannot pass the model's batch norm, or None.

    Batch norm in training normalises each channel over the batch's values, and torch refuses one value
    ("Expected more than 1 value per channel when training") in the middle of the first step, as a traceback.
    """
    if values_per_image is None or values_per_image * batch > 1:
        return None
    return (f"a batch of {batch} image per process reaches a batch-norm layer of the model as one value per channel "
            f"(a 1x1 map at {size}x{size} px, or a head's features), which batch norm cannot normalise; use a "
            "train.batch_size of 2 or more per process (a training split of 1 image cuts it to 1); for a backbone's "
            "map, a larger image_size or freeze: [backbone] (which keeps its batch norm fixed) also does")


def _check_loss(task: Task, who: Provenance, output: Tensor, targets: Tensor) -> None:
    """One call of the task's loss on a dummy output: `per_sample_loss` gives (N,) floats (`loss` one number).

    `per_sample_loss` gets what `Task.loss` would give it: the output in float32, missing labels set to 0.
    A task with a `loss` of its own (it may not use `per_sample_loss` at all) has that called instead.
    """
    if type(task).loss is not Task.loss:
        PluginCall("the loss of", who, LOSS_FIX)(
            task.loss, output, targets, check=lambda loss: shape_problem(loss, (), f"{DUMMY_ROWS} samples"))
        return

    def per_row(loss: object) -> str | None:
        if isinstance(loss, Tensor) and loss.shape == (DUMMY_ROWS,) and not loss.is_floating_point():
            return f"returned dtype {loss.dtype}; expected a float tensor"
        return shape_problem(loss, (DUMMY_ROWS,), f"{DUMMY_ROWS} samples")

    PluginCall("the per_sample_loss of", who, LOSS_FIX)(
        task.per_sample_loss, output.float(), labels_or_zero(targets, label_mask(targets)), check=per_row)
