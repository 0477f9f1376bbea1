"""Ship a trained HydraNet as one file: ONNX, TorchScript or a torch.export program.

A deployed model should need neither hydranet nor its plugins, so the file
holds everything between pixels and per-task outputs:

- input `images`: float32 RGB in [0, 1], shape (N, 3, S, S), S the training
  size, N free (a dynamic batch dimension). Floats rather than uint8 because
  every runtime and image library hands them over without a cast, and the
  normalisation training used (mean/std) is inside the file, so callers only
  divide their 0-255 pixels by 255. Every format refuses another shape or
  dtype (`check_images`); none checks the range (see there why);
- outputs, one per task and in the spec's task order: regression tasks in
  their label's units (e.g. years: a regression head outputs the prediction
  in the label's units, as the task contract says; a task whose decode
  rescales its output breaks that, and the export says so), classification
  tasks as logits (one
  column for a binary task, the logit of its second class; K columns for a
  K-class task). ONNX names each output after its task; TorchScript and
  torch.export return a tuple in that order.

A JSON manifest (input, outputs, class names, units; `export_manifest.py`)
travels inside the file (ONNX metadata `hydranet`, `hydranet.json` extra file
otherwise), so whoever receives the file can decode it without the spec;
`exported_files.py` reads files back. Files are written to a
temporary name, checked against PyTorch when asked, and only then renamed:
a failed export leaves nothing behind. An output folder that cannot take
the file is refused before exporting starts, and so is an output file that
is the checkpoint itself, or any file already there but an earlier export of
the same format (with its manifest): what a user wrote is replaced only when
they say so (`force`, `--force`).
"""

from __future__ import annotations

import functools
import inspect
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from hydranet.core.atomic import atomic_file, same_file, writable_folder
from hydranet.core.errors import HydranetError
from hydranet.core.export_formats import (FORMATS, INPUT_NAME, MANIFEST, MIN_OPSET, SUFFIX, TITLE, ExportError,
                                          Format)
from hydranet.core.export_manifest import build_manifest, decode_warnings
from hydranet.core.exported_files import exported_as, load_exported, require_onnx

if TYPE_CHECKING:
    from hydranet.core.inference import TrainedModel

ONNX_LIMIT_BYTES = 2 * 1024**3 - 64 * 1024**2  # one protobuf file holds < 2 GiB
CHECK_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}  # of each output's largest magnitude


def check_images(images: Tensor, size: int) -> None:
    """Raise a ValueError unless `images` is (N, 3, size, size) float32: what every exported file takes.

    Written in the subset of Python that TorchScript compiles, because a
    TorchScript file is traced, and a trace keeps no Python checks: without
    this function scripted around the trace (`_write_torchscript`) such a
    file took a 1-channel, a 224 px or a uint8 batch and returned
    normal-looking outputs (the normalisation broadcast one channel to
    three; uint8 0-255 pixels gave ages in the thousands). ONNX and
    torch.export enforce the shape themselves; this check also runs, as
    plain Python, when those are traced, where it costs nothing.

    The value range is deliberately not checked: that needs a reduction
    over the whole batch and, to raise, a device-to-host sync on every call,
    and ONNX cannot raise on values at all, so the formats would disagree.
    0-255 floats therefore give wrong outputs without an error, in every
    format; the manifest and the docs say so.
    """
    if images.dim() == 4 and images.size(1) == 3 and images.size(2) == size and images.size(3) == size \
            and images.dtype == torch.float32:
        return
    names: list[tuple[torch.dtype, str]] = [
        (torch.float32, "float32"), (torch.uint8, "uint8"), (torch.float64, "float64"), (torch.float16, "float16"),
        (torch.bfloat16, "bfloat16"), (torch.int64, "int64"), (torch.int32, "int32"), (torch.bool, "bool")]
    dtype = "another dtype"  # TorchScript has no dtype names of its own (str(dtype) is a number there)
    for known, name in names:
        if images.dtype == known:
            dtype = name
    shape = "(" + ", ".join([str(d) for d in images.shape]) + ")"
    hint = " (divide 0-255 pixels by 255)" if dtype == "uint8" else ""
    raise ValueError(f"this model expects images as (N, 3, {size}, {size}) float32 RGB in [0, 1], got {dtype} "
                     f"of shape {shape}{hint}; prepare them as the file's manifest (hydranet.json) says")


class ExportedHydraNet(nn.Module):
    """images in [0, 1] -> a tuple of per-task outputs, in task order; other shapes and dtypes are refused.

    `check_images` runs here in eager mode and while torch.export or the
    dynamo ONNX exporter trace it; `torch.jit.trace` would bake its outcome
    in as a constant, so under a trace it is skipped and the TorchScript
    writer scripts it around the traced module instead.
    """

    def __init__(self, model: nn.Module, task_names: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 image_size: int):
        super().__init__()
        self.model = model
        self.task_names = list(task_names)
        self.image_size = int(image_size)
        self.assert_dtype = True
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        if not torch.jit.is_tracing():
            check_images(images, self.image_size)
            # torch.export keeps this op in its graph, so the .pt2 file refuses another dtype when run (a uint8
            # batch would otherwise be promoted by the normalisation and give garbage); ONNX declares the dtype.
            # Older torch (2.4) fixes the batch size by it: `_write_exported` then exports without it.
            if self.assert_dtype:
                torch.ops.aten._assert_tensor_metadata(images, dtype=torch.float32)
        outputs = self.model((images - self.mean) / self.std)
        return tuple(outputs[name] for name in self.task_names)


class CheckedTorchScript(nn.Module):
    """A traced ExportedHydraNet with `check_images` in front, compiled by `torch.jit.script`.

    The trace records tensor operations only; scripting this small module
    keeps the check's branches, so the saved file refuses wrong input by
    itself, with no hydranet installed.
    """

    def __init__(self, traced: nn.Module, image_size: int):
        super().__init__()
        self.traced = traced
        self.image_size = image_size

    def forward(self, images: Tensor):  # the tuple's length is the task count, so TorchScript infers the type
        check_images(images, self.image_size)
        return self.traced(images)


@dataclass
class ExportResult:
    """What was written: the file and the manifest stored in it (input shape, output names)."""

    path: Path
    fmt: str
    manifest: dict[str, Any]
    max_difference: float | None = None  # largest |exported - PyTorch| of the check, when it ran
    warnings: list[str] = field(default_factory=list)  # what a user of the file must know (see `decode_warnings`)


def default_output(checkpoint: str | Path, fmt: str) -> Path:
    """`runs/x/best.pt` -> `runs/x/best.onnx` (or `.ts.pt`, `.pt2`)."""
    path = Path(checkpoint)
    return path.with_name(path.stem + SUFFIX[fmt])


# ---------------------------------------------------------------- export


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None, fmt: Format = "onnx", *,
                      opset: int | None = None, check: bool = True, force: bool = False) -> ExportResult:
    """Write the checkpoint's model as one file in `fmt`.

    With `check`, the written file is loaded back and run on random images at
    two batch sizes before it replaces `out`; outputs that differ from
    PyTorch's beyond `CHECK_TOLERANCE` make it an error, and nothing is kept.
    An existing `out` is replaced only when it is an earlier export of `fmt`
    or with `force`; never when it is `checkpoint` itself.
    """
    from hydranet.core.inference import TrainedModel

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if opset is not None and fmt != "onnx":
        raise ExportError(f"--opset applies to ONNX only, not to '{fmt}'")
    if opset is not None and opset < MIN_OPSET:
        raise ExportError(f"ONNX opset {opset} is too old: torch's exporter writes opset {MIN_OPSET} or newer")
    if fmt == "onnx":
        require_onnx(runtime=check)
    trained = TrainedModel.from_checkpoint(checkpoint, device="cpu")
    target = Path(out) if out else default_output(checkpoint, fmt)
    check_target(checkpoint, target, fmt, force)
    writable_folder(target, hint="Choose another output file (--out FILE).")  # before minutes of tracing
    wrapper = ExportedHydraNet(trained.model.eval(), trained.task_names, trained.mean, trained.std,
                               trained.image_size).eval()
    warned = decode_warnings(trained)
    manifest = build_manifest(trained, list(warned))
    example = torch.rand(2, 3, trained.image_size, trained.image_size)
    named = name_warning(target, fmt)
    result = ExportResult(target, fmt, manifest, warnings=[*([named] if named else []), *warned.values()])
    with atomic_file(target, suffix=SUFFIX[fmt]) as tmp:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                result.warnings += _WRITERS[fmt](wrapper, example, tmp, manifest, opset) or []
        except HydranetError:
            raise
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            other = "exported" if fmt != "exported" else "torchscript"
            raise ExportError(f"exporting {checkpoint} to {fmt} failed: {type(error).__name__}: {first}. "
                              f"Its backbone may use an operation {fmt} cannot express; "
                              f"try --format {other}.") from error
        if check:
            result.max_difference = check_export(tmp, fmt, trained, task_names=trained.task_names)
    return result


def check_target(checkpoint: str | Path, target: Path, fmt: str, force: bool = False) -> None:
    """Refuse an output file that is the checkpoint or another hydranet checkpoint (even with `force`: a run's
    weights), or one not exported before in `fmt` unless `force`."""
    from hydranet.core.checkpoint import is_hydranet_checkpoint, never_replaced

    if same_file(checkpoint, target):
        raise ExportError(f"--out {target} is the checkpoint being exported: the export would replace it. Choose "
                          f"another output file (--out FILE), e.g. {default_output(checkpoint, fmt)}")
    if is_hydranet_checkpoint(target):
        raise ExportError(never_replaced(target))
    if force or not target.exists() or (target.is_file() and exported_as(target) == fmt):
        return
    article = "an" if fmt[0] in "aeiou" else "a"
    raise ExportError(f"{target} exists and is not {article} {fmt} file hydranet exported: the export would replace "
                      "it. Choose another output file (--out FILE), or pass --force to replace it")


def name_warning(target: Path, fmt: str) -> str | None:
    """A warning when `target`'s name does not end as `fmt` files do, else None.

    Not an error: the name is the user's choice, and the file works whatever
    it is called. But people and tools (hydranet's own `format_of`, model
    viewers, deployment scripts) tell an export's format by its ending, so a
    TorchScript file named `model.onnx` is handed to onnxruntime and fails
    far from the cause.
    """
    name, usual = target.name, SUFFIX[fmt]
    if name.endswith(usual):
        return None
    other = next((f for f, suffix in SUFFIX.items() if f != fmt and name.endswith(suffix)), None)
    if other is not None:
        renamed = target.with_name(name[:-len(SUFFIX[other])] + usual)
        return (f"{target} holds a {TITLE[fmt]} model, but its name ends in {SUFFIX[other]}, the ending of "
                f"{TITLE[other]} files: whoever goes by the name will load it as {TITLE[other]} and fail. "
                f"{TITLE[fmt]} files end in {usual}: rename it {renamed.name}, or export with --out {renamed}")
    return (f"{target} holds a {TITLE[fmt]} model, but its name does not end in {usual}, the usual ending of "
            f"{TITLE[fmt]} files: tools that go by the name cannot tell its format (hydranet's read_manifest then "
            f"needs fmt='{fmt}')")


def _batch_dim() -> dict[str, dict[int, object]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=65536)}}


def _write_onnx(wrapper: ExportedHydraNet, example: Tensor, path: Path, manifest: dict[str, Any],
                opset: int | None) -> None:
    size = sum(t.numel() * t.element_size() for t in wrapper.state_dict().values())
    if size > ONNX_LIMIT_BYTES:
        raise ExportError(f"the model's weights take {size / 1024**3:.1f} GiB, more than one ONNX file can hold "
                          "(2 GiB); use --format exported")
    if not _dynamo_onnx_exporter():
        _write_onnx_torchscript_based(wrapper, example, path, manifest, opset)
        return
    program = torch.onnx.export(wrapper, (example,), None, input_names=[INPUT_NAME], output_names=wrapper.task_names,
                                dynamic_shapes=_batch_dim(), dynamo=True, verbose=False, opset_version=opset)
    written = program.model.opset_imports.get("", None)
    if opset is not None and written != opset:
        raise ExportError(f"torch's ONNX exporter could not write opset {opset} (it wrote {written}); "
                          "leave out --opset or pick another")
    program.model.metadata_props["hydranet"] = json.dumps(manifest)
    program.save(str(path), external_data=False)  # one self-contained file


@functools.lru_cache(maxsize=None)
def _parameter_names(function: Callable[..., Any]) -> frozenset[str]:
    """The names `function` takes, read from its signature once (keyed by the function, so a stand-in is read anew)."""
    return frozenset(inspect.signature(function).parameters)


def _dynamo_onnx_exporter() -> bool:
    """Whether torch.onnx.export takes `dynamo=True` with `dynamic_shapes` (torch 2.5 and newer; not 2.4)."""
    return "dynamic_shapes" in _parameter_names(torch.onnx.export)


def _write_onnx_torchscript_based(wrapper: ExportedHydraNet, example: Tensor, path: Path, manifest: dict[str, Any],
                                  opset: int | None) -> None:
    """ONNX through torch's older, TorchScript-based exporter, for torch 2.4.

    The same file as the dynamo path writes: one input `images`, one output
    per task, a dynamic batch dimension, the manifest in the metadata.
    Torch 2.4's export has no `dynamo` argument (2.5 added it, with
    `dynamic_shapes`): it is passed only where torch takes it.
    """
    import onnx

    names = [INPUT_NAME, *wrapper.task_names]
    legacy = {"dynamo": False} if "dynamo" in _parameter_names(torch.onnx.export) else {}
    torch.onnx.export(wrapper, (example,), str(path), input_names=[INPUT_NAME], output_names=list(wrapper.task_names),
                      dynamic_axes={name: {0: "batch"} for name in names}, opset_version=opset or MIN_OPSET,
                      **legacy)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "hydranet", json.dumps(manifest)
    onnx.save(model, str(path))


def _write_torchscript(wrapper: ExportedHydraNet, example: Tensor, path: Path, manifest: dict[str, Any],
                       opset: int | None) -> None:
    traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    checked = torch.jit.script(CheckedTorchScript(traced, wrapper.image_size))
    torch.jit.save(checked, str(path), _extra_files={MANIFEST: json.dumps(manifest)})


def _write_exported(wrapper: ExportedHydraNet, example: Tensor, path: Path, manifest: dict[str, Any],
                    opset: int | None) -> list[str]:
    """Write the torch.export file; the warnings its user must know (none, where this torch keeps every check).

    The dtype assert fixes the batch size in older torch's export (2.4: "batch was inferred to be a
    constant"), which would refuse every other batch size. There the file is written without it, checking the
    shape only, and the manifest and a warning say so.
    """
    try:
        program = torch.export.export(wrapper, (example,), dynamic_shapes=_batch_dim())
        said: list[str] = []
    except Exception:  # noqa: BLE001 - which error a torch raises for it varies; without the assert it must pass
        wrapper.assert_dtype = False
        program = torch.export.export(wrapper, (example,), dynamic_shapes=_batch_dim())
        unchecked = (f"torch {torch.__version__} cannot keep a dtype check in a torch.export file whose batch size "
                     "is free: this file checks the input's shape, not its dtype (give it float32)")
        manifest["input"]["note"] += f". {unchecked}"
        said = [unchecked]
    torch.export.save(program, str(path), extra_files={MANIFEST: json.dumps(manifest)})
    return said


_WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript, "exported": _write_exported}


@torch.no_grad()
def check_export(path: Path, fmt: str, trained: TrainedModel, task_names: Sequence[str],
                 batch_sizes: Sequence[int] = (1, 3)) -> float:
    """Largest |exported - PyTorch| over random images; an ExportError beyond `CHECK_TOLERANCE`.

    The tolerance is relative to each output's largest magnitude, not to each
    element: a logit near zero next to large ones may carry the same float
    rounding as its neighbours. Two batch sizes, neither the one traced with,
    so a batch dimension that was baked in fails here rather than in the
    user's deployment.
    """
    run = load_exported(path, fmt)
    generator = torch.Generator().manual_seed(0)
    largest = 0.0
    for n in batch_sizes:
        pixels = torch.randint(0, 256, (n, 3, trained.image_size, trained.image_size), generator=generator,
                               dtype=torch.uint8)
        expected = trained.predict_tensor(pixels)
        try:
            got = run(pixels.float() / 255)
        except Exception as error:
            raise ExportError(f"the {fmt} file does not run on a batch of {n}: {type(error).__name__}: "
                              f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}") from error
        for name, value in zip(task_names, got):
            want = expected[name].float().cpu()
            if value.shape != want.shape:
                raise ExportError(f"the {fmt} file's output '{name}' has shape {tuple(value.shape)} for a batch "
                                  f"of {n}; PyTorch gives {tuple(want.shape)}")
            difference = float((value - want).abs().max()) if want.numel() else 0.0
            largest = max(largest, difference)
            scale = float(want.abs().max()) if want.numel() else 0.0
            if not difference <= CHECK_TOLERANCE["atol"] + CHECK_TOLERANCE["rtol"] * scale:
                raise ExportError(f"the {fmt} file's output '{name}' differs from PyTorch's by up to "
                                  f"{difference:.3g} (its values reach {scale:.3g}); the file was not written")
    return largest
