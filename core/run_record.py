"""One run folder as `hydranet compare` sees it (RunRecord), and the error for a folder that cannot be compared.

Apart from compare.py, which reads the records from run folders, so that the
comparison (comparison.py) and its maths (delta_m.py) need the record alone,
not the reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydranet.core.errors import HydranetError
from hydranet.core.param_text import call_text, leaf_text
from hydranet.core.plot import RunSeries
from hydranet.core.spec_differences import component_name

class RunProblem(HydranetError):
    """A RUN argument that cannot be compared; the message names the folder and what to do."""


@dataclass
class RunRecord:
    """One run folder as compared: its spec, and its metrics at the chosen epoch."""

    path: Path
    spec: dict[str, Any]
    epochs_done: int
    best_epoch: int | None  # None: neither summary.json nor best.pt says
    epoch: int  # the epoch the metrics are read at
    metrics: dict[str, dict[str, float]]  # task -> metric -> value
    higher_is_better: dict[str, dict[str, bool]]
    label: str = ""
    #: its metrics.csv, every column (what `hydranet plot` draws, read once with the rest)
    series: RunSeries = field(default_factory=lambda: RunSeries([]), repr=False, compare=False)
    #: the median seconds of its training epochs (`train_seconds_per_epoch`); None where the run recorded none
    train_seconds: float | None = None
    #: its summary.json (None before it finished), kept so that its test metrics need no second read (`on_test_split`)
    summary: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    #: the weighting's parameters (dotted keys) in which runs of its weighting compared with it differ
    #: (`label_weightings`): what tells two `static` runs apart
    weighting_params: dict[str, Any] = field(default_factory=dict)

    @property
    def weighting(self) -> str:
        return component_name(self.spec.get("weighting"))

    @property
    def weighting_label(self) -> str:
        """The weighting column: its name, and the parameters that set it apart, `static(weights.age=2)`."""
        return call_text(self.weighting, [(key, leaf_text(value)) for key, value in self.weighting_params.items()])

    @property
    def backbone(self) -> str:
        return component_name(self.spec.get("backbone"))

    @property
    def epochs_planned(self) -> int:
        return int(self.spec.get("train", {}).get("epochs", self.epochs_done))
