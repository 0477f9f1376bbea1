"""hydranet: one shared backbone, many heads, every head from a task plugin.

This module is the public face; it only re-exports. docs/concepts.md defines the
words (task, head, backbone, weighting, spec, plugin); docs/architecture.md the layout.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path as _Path
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# In a source checkout the subpackages (core/, plugins/, tasks/, specs/) sit
# beside this folder, mapped in by pyproject's package-dir. When the checkout
# itself is on sys.path (`python -m pytest` from its root after a non-editable
# `pip install .`), this folder shadows the installed package; let the
# subpackages be found beside it so the checkout still imports as a whole.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "core" / "hookspecs.py").is_file() and str(_checkout) not in __path__:
    __path__.append(str(_checkout))

# Every public name imports on first use (PEP 562). `import hydranet` then costs
# nothing, so the console entry (`hydranet.__main__.main`) is running, and can turn
# a Ctrl-C into one line, before torch's import (about 1.5 s) begins; and a
# plugin's `from hydranet import hookimpl` does not pull in the engine.
_LAZY = {
    "hookimpl": "hydranet.core.hookspecs",
    **dict.fromkeys(("Backbone", "Dataset", "Sample", "Task", "Weighting"), "hydranet.core.interfaces"),
    "StepContext": "hydranet.core.interfaces",  # what a weighting's backward takes, in a training loop of one's own
    "weighting": "hydranet.core.standalone",
    "Metric": "hydranet.core.metrics",
    **dict.fromkeys(("CheckpointError", "DataError", "HydranetError", "InputError", "RunFolderError", "SpecError",
                     "TrainingError", "TrainingInterrupted"), "hydranet.core.errors"),
    "StoppedAtOnce": "hydranet.core.interrupts",  # a KeyboardInterrupt: a second Ctrl-C stopped a run unsaved
    "load_spec": "hydranet.core.spec",
    "train": "hydranet.core.engine",
    "sweep": "hydranet.core.sweep",
    "load": "hydranet.core.checkpoint",
    "compare": "hydranet.core.compare",
    "components": "hydranet.core.plugins",
    "Components": "hydranet.core.plugins",
    "RunInfo": "hydranet.core.observers",
    # what the functions return, for isinstance checks and annotations
    "RunResult": "hydranet.core.run_result",
    "SweepResult": "hydranet.core.sweep",
    **dict.fromkeys(("TrainedModel", "Evaluation"), "hydranet.core.inference"),
    "EvalResult": "hydranet.core.evaluation",
    "Comparison": "hydranet.core.comparison",
}

if _TYPE_CHECKING:  # what the lazy names are, for editors and type checkers
    from hydranet.core.checkpoint import load
    from hydranet.core.compare import compare
    from hydranet.core.comparison import Comparison
    from hydranet.core.engine import train
    from hydranet.core.run_result import RunResult
    from hydranet.core.evaluation import EvalResult
    from hydranet.core.inference import Evaluation, TrainedModel
    from hydranet.core.plugins import Components, components
    from hydranet.core.errors import (CheckpointError, DataError, HydranetError, InputError, RunFolderError,
                                       SpecError, TrainingError, TrainingInterrupted)
    from hydranet.core.interrupts import StoppedAtOnce
    from hydranet.core.hookspecs import hookimpl
    from hydranet.core.interfaces import Backbone, Dataset, Sample, StepContext, Task, Weighting
    from hydranet.core.standalone import weighting
    from hydranet.core.metrics import Metric
    from hydranet.core.observers import RunInfo
    from hydranet.core.spec import load_spec
    from hydranet.core.sweep import SweepResult, sweep


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'hydranet' has no attribute {name!r}")


def __dir__() -> list[str]:
    # `annotations` is the __future__ import's feature object, not part of the API
    return sorted({name for name in globals() if not name.startswith("_") and name != "annotations"}
                  | set(__all__) | set(_LAZY))

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
    "RunFolderError",
    "load_spec",
    "train",
    "sweep",
    "load",
    "compare",
    "components",
    "weighting",
    "RunInfo",
]
# The result types (RunResult, SweepResult, TrainedModel, Evaluation, EvalResult, Comparison, Components),
# StoppedAtOnce (a KeyboardInterrupt, not a HydranetError) and StepContext (what `weighting(...).backward` takes,
# needed only by a training loop of one's own) are public too, in `_LAZY` and `dir(hydranet)`, but not
# in `__all__`: tests/test_packaging.py keeps `__all__` to one screen, and `from hydranet import *` need not bring
# the types into a namespace.
