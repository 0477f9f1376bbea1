"""Reading exported files back: their format, their manifest, and a function that runs them.

For the export's own check, for `--out`'s refusal to replace what is not an
earlier export, and for quick use from Python. Apart from the writers
(`export.py`) because each of these opens a file, not a model.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hydranet.core.export_formats import INPUT_NAME, INSTALL_HINT, MANIFEST, SUFFIX, ExportError


def require_onnx(runtime: bool = False) -> None:
    """A clear error naming the missing packages, instead of an ImportError deep inside torch.onnx."""
    needed = ["onnx", "onnxscript"] + (["onnxruntime"] if runtime else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        what = "running an ONNX model" if runtime and missing == ["onnxruntime"] else "ONNX export"
        raise ExportError(f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                          f"installed: {INSTALL_HINT}")


def exported_as(path: Path) -> str | None:
    """The format of a file hydranet exported (its manifest inside says so), or None for any other file.

    Read without running anything in it: a TorchScript or torch.export file is
    a zip archive, read as one; an ONNX file is a protobuf, parsed by onnx.
    """
    import zipfile

    def hydranet_manifest(text: bytes | str) -> bool:
        try:
            return json.loads(text).get("format") == "hydranet-export"
        except (ValueError, AttributeError):
            return False

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:  # each name below the archive's top folder, split once
                entries = {name: name.split("/")[1:] for name in archive.namelist()}
                manifest = next((name for name, parts in entries.items() if parts == ["extra", MANIFEST]), None)
                if manifest is None or not hydranet_manifest(archive.read(manifest)):
                    return None
            return "torchscript" if any(parts[:1] == ["code"] for parts in entries.values()) else "exported"
        if importlib.util.find_spec("onnx") is None:
            return None
        return "onnx" if hydranet_manifest(_onnx_properties(path).get("hydranet", "")) else None
    except Exception:  # any file at all may be there: whatever cannot be read as an export is not one
        return None


def load_exported(path: str | Path, fmt: str | None = None) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """A function running an exported file on float images: outputs as a tuple in task order.

    For checks and quick use from Python; a deployment would call its runtime
    (onnxruntime, torch.jit.load, torch.export.load) directly, as this does.
    """
    path = Path(path)
    fmt = fmt or format_of(path)
    if fmt == "onnx":
        require_onnx(runtime=True)
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return lambda images: tuple(torch.from_numpy(v) for v in session.run(names, {INPUT_NAME: images.numpy()}))
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        return lambda images: tuple(module(images))
    program = torch.export.load(str(path)).module()
    return lambda images: tuple(program(images))


def _onnx_properties(path: Path) -> dict[str, str]:
    """An ONNX file's metadata properties (where hydranet keeps its manifest), parsed without external data."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def format_of(path: str | Path) -> str:
    name = Path(path).name
    for fmt, suffix in SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    raise ExportError(f"cannot tell the format of {path} from its name; name it *.onnx, *.ts.pt or *.pt2")


def read_manifest(path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """The manifest stored in an exported file (input shape, output names and meanings)."""
    path = Path(path)
    fmt = fmt or format_of(path)
    if fmt == "onnx":
        require_onnx()
        return json.loads(_onnx_properties(path)["hydranet"])
    files = {MANIFEST: ""}
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    else:
        torch.export.load(str(path), extra_files=files)
    return json.loads(files[MANIFEST])
