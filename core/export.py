"""Ship a trained HydraNet as one file: ONNX, TorchScript or a torch.export program.

The exported model takes float32 images in [0, 1], shape (N, 3, S, S) with
S the training size and any N, normalises them as training did, runs the
backbone once and returns one named output per task: regression tasks in
their label's units (e.g. years), classification tasks as logits (one column
for a binary task, K for a multiclass one).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from hydranet.core.errors import HydranetError

Format = Literal["onnx", "torchscript", "exported"]
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts", "exported": ".pt2"}
INPUT_NAME = "images"


class ExportedHydraNet(nn.Module):
    """images in [0, 1] -> a tuple of per-task outputs, in task order."""

    def __init__(self, model: nn.Module, task_names: Sequence[str], mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.task_names = list(task_names)
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model((images - self.mean) / self.std)
        return tuple(outputs[name] for name in self.task_names)


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None, fmt: Format = "onnx") -> Path:
    """Write the checkpoint's model as one file in `fmt`; returns its path."""
    from hydranet.core.inference import TrainedModel

    trained = TrainedModel.from_checkpoint(checkpoint, device="cpu")
    target = Path(out) if out else Path(checkpoint).with_suffix(SUFFIX[fmt])
    wrapper = ExportedHydraNet(trained.model.eval(), trained.task_names, trained.mean, trained.std).eval()
    example = torch.rand(2, 3, trained.image_size, trained.image_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=SUFFIX[fmt], dir=target.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            _WRITERS[fmt](wrapper, example, Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _batch_dim() -> dict[str, dict[int, object]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=65536)}}


def _write_onnx(wrapper: ExportedHydraNet, example: Tensor, path: Path) -> None:
    if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
        raise HydranetError("ONNX export needs onnx and onnxscript: pip install 'hydranet[export]'")
    torch.onnx.export(wrapper, (example,), str(path), input_names=[INPUT_NAME], output_names=wrapper.task_names,
                      dynamic_shapes=_batch_dim(), dynamo=True, verbose=False)


def _write_torchscript(wrapper: ExportedHydraNet, example: Tensor, path: Path) -> None:
    traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    torch.jit.save(traced, str(path))


def _write_exported(wrapper: ExportedHydraNet, example: Tensor, path: Path) -> None:
    program = torch.export.export(wrapper, (example,), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path))


_WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript, "exported": _write_exported}
