"""hydranet: one shared backbone, many heads, every head from a task plugin.

This module is the public face; it only re-exports. See DESIGN.md for the words
(task, head, backbone, weighting, spec, plugin) and the contracts.
"""

from __future__ import annotations

__version__ = "0.1.0"

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Backbone, Dataset, Sample, Task, Weighting
from hydranet.core.metrics import Metric
from hydranet.core.errors import HydranetError, SpecError

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
    "load_spec",
    "train",
    "load",
]
