"""hydranet: one shared backbone, many heads, every head from a task plugin.

This module is the public face; it only re-exports. docs/concepts.md defines the
words (task, head, backbone, weighting, spec, plugin); docs/architecture.md the layout.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path as _Path

# In a source checkout the subpackages (core/, plugins/, tasks/, specs/) sit
# beside this folder, mapped in by pyproject's package-dir. When the checkout
# itself is on sys.path (`python -m pytest` from its root after a non-editable
# `pip install .`), this folder shadows the installed package; let the
# subpackages be found beside it so the checkout still imports as a whole.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "core" / "hookspecs.py").is_file() and str(_checkout) not in __path__:
    __path__.append(str(_checkout))

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Backbone, Dataset, Sample, Task, Weighting
from hydranet.core.metrics import Metric
from hydranet.core.errors import (CheckpointError, DataError, HydranetError, InputError, SpecError, TrainingError,
                                   TrainingInterrupted)

# The engine, spec loader and checkpoint loader import lazily: a plugin's
# `import hydranet` for `hookimpl` and `Task` should not pull in the engine.
_LAZY = {
    "load_spec": "hydranet.core.spec",
    "train": "hydranet.core.engine",
    "load": "hydranet.core.checkpoint",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hydranet' has no attribute {name!r}")

__all__ = [
    "__version__",
    "hookimpl",
    "Task",
    "Weighting",
    "Backbone",
    "Dataset",
    "Sample",
    "Metric",
    "HydranetError",
    "SpecError",
    "InputError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "TrainingInterrupted",
    "load_spec",
    "train",
    "load",
]
