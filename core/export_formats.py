"""The export formats' names, file endings and the lowest ONNX opset: what the command line needs to offer them.

Apart from export.py because that imports torch, and `hydranet --help` (or
`hydranet export --help`) should not wait for torch to load.
"""

from __future__ import annotations

from typing import Literal

from hydranet.core.errors import HydranetError

Format = Literal["onnx", "torchscript", "exported"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript", "exported")
#: default file name endings, next to the checkpoint (`best.pt` -> `best.onnx`); never `.pt`, the checkpoint's own
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts.pt", "exported": ".pt2"}
#: what each format is called in messages
TITLE = {"onnx": "ONNX", "torchscript": "TorchScript", "exported": "torch.export"}
MIN_OPSET = 18  # torch's ONNX exporter has no implementations below this
INPUT_NAME = "images"
MANIFEST = "hydranet.json"
INSTALL_HINT = "pip install 'hydranet[export]'"


class ExportError(HydranetError):
    """An export could not be written or does not reproduce the PyTorch model."""
