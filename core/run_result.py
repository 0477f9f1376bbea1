"""What `train` returns (`RunResult`), and reading a metric of an epoch back from metrics.csv's rows.

Apart from the engine so that code which reads a run's outcome (the CLI's
closing table, a notebook's repr) needs neither the loop nor its imports to
say what a result holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydranet.core.device import RunSettings
from hydranet.core.evaluation import EvalResult
from hydranet.core.spec_models import LOSS_MONITOR


@dataclass
class RunResult:
    """What `train` returns: where it wrote, and the figures it measured.

    Its repr is short (`__repr__`: the folder, the epochs, the best epoch's
    metrics), for a notebook cell that ends in `train(...)`; the fields hold
    the rest.
    """

    #: the run folder: spec.yaml, train.log, metrics.csv, summary.json, last.pt, best.pt
    run_dir: Path
    #: one row per epoch, as metrics.csv has it: "epoch" (an int), train/val seconds, "lr", then per task
    #: "train_loss.TASK", "val_loss.TASK", "val.TASK.METRIC" and "weight.TASK". A resumed run's earlier epochs are
    #: read back from metrics.csv, so their figures are as it stored them (9 significant digits).
    history: list[dict[str, Any]]
    #: the last epoch's validation (the weights in last.pt): losses, metrics and which metrics are better higher
    final: EvalResult
    #: task -> metric -> value, on the validation images, of each task's best constant prediction (the training
    #: labels' mean or majority class), to read the metrics against; a task without one is left out
    baselines: dict[str, dict[str, float]]
    #: the best epoch by `monitor` (by default the one with the lowest finite validation loss), whose weights
    #: best.pt holds (0: no epoch's monitored value was finite)
    best_epoch: int
    #: the device, precision, compilation and CUDA-graph switches the run used
    settings: RunSettings
    #: what the run has to say that a notebook with echo=False would not see: the data's notes (files skipped,
    #: labels missing, ...), then every "warning: ..." line the run logged to train.log, each once, in order
    notes: list[str] = field(default_factory=list)
    #: data_seconds, decode_seconds, cache_hit, placement, train_images (per epoch), setup_seconds, setup_parts
    #: (seconds of before_data, data, model, step), first_step_seconds, epoch_train_seconds (list),
    #: epoch_val_seconds (list); synchronised with the device. The per-epoch lists hold every epoch of the run, a
    #: resumed run's earlier ones too (restored from last.pt); an epoch resumed mid-way counts its steps before
    #: the stop and after it, and is None in epoch_train_seconds where last.pt (an older hydranet's) did not time
    #: the steps before the stop: left out of per-epoch figures, not counted as a whole epoch
    timings: dict[str, Any] = field(default_factory=dict)
    #: False on the other ranks of a distributed run: only rank 0 reports (and wrote the run folder).
    is_main: bool = True
    #: task -> metric -> value on the test split (data.test_fraction), scored once with the best epoch's weights
    #: (those in best.pt); None without a test split, or when no epoch had a finite validation loss
    test: dict[str, dict[str, float]] | None = None
    #: how many images the test split holds (0: no test split)
    test_images: int = 0
    #: how many images the validation split holds (0: none, so `final` and the best epoch were measured on the
    #: training images, as train.log says)
    val_images: int = 0
    #: what picked `best_epoch` (train.monitor): "loss", the total validation loss, or "TASK.METRIC"
    monitor: str = LOSS_MONITOR
    #: True when train.patience ended the run before its last epoch (`history` ends there); summary.json says so too
    stopped_early: bool = False

    def __repr__(self) -> str:
        """`RunResult(run_dir='runs/x', epochs=3, best_epoch=2, best={'age': {'mae': 6.55}})`, with
        `stopped_early=True` after the epochs when train.patience ended the run: the default repr would print every
        row of the history."""
        best = self.best
        shown = None if best is None else {task: {metric: float(f"{value:.4g}") for metric, value in metrics.items()}
                                           for task, metrics in best.items()}
        early = ", stopped_early=True" if self.stopped_early else ""
        return (f"RunResult(run_dir={str(self.run_dir)!r}, epochs={len(self.history)}{early}, "
                f"best_epoch={self.best_epoch}, best={shown!r})")

    @property
    def best(self) -> dict[str, dict[str, float]] | None:
        """The validation metrics of the best epoch, the weights in best.pt (None: no epoch had a finite loss).

        `final` is the last epoch's, the weights in last.pt; `hydranet eval best.pt`
        and `hydranet compare` report these.
        """
        return metrics_at(self.history, self.best_epoch, self.final.metrics)


def metrics_at(history: Sequence[Mapping[str, Any]], epoch: int,
               like: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]] | None:
    """Task -> metric -> value of `epoch`'s row of metrics.csv (`val.TASK.METRIC`), for the tasks and metrics
    of `like`; None when no row is that epoch's. From the rows, so a resumed run has its earlier epochs' too."""
    row = next((row for row in history if int(float(row["epoch"])) == epoch), None)
    if row is None:
        return None
    return {task: {metric: _number(row.get(f"val.{task}.{metric}")) for metric in metrics}
            for task, metrics in like.items()}


def _number(value: Any) -> float:
    """A metrics.csv cell as a number; NaN for one that is blank or missing (a row the user edited)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def metrics_text(metrics: Mapping[str, float]) -> str:
    """"mae 4.210 accuracy 0.875": one task's metrics as train.log's epoch and test lines both write them."""
    return " ".join(f"{metric} {value:.3f}" for metric, value in metrics.items())
