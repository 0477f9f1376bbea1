"""`hydranet plot RUN`: PNG charts of a run folder's metrics.csv.

Three figures, each a grid of small panels with titles, axis labels and
legends: `losses.png` (each task's training and validation loss), `metrics.png`
(each task's validation metrics, one panel per metric because their scales
differ: an MAE in years next to an accuracy in [0, 1]) and `weights.png` (the
weight each task had in each epoch, all tasks on one axis so their balance
is visible).

matplotlib is an optional extra (`pip install 'hydranet[plot]'`), imported
only when a chart is drawn. Figures are drawn on `matplotlib.figure.Figure`
with the Agg canvas directly rather than through `pyplot`: no GUI backend is
needed, and the global backend of a notebook or script that imported
hydranet is left alone.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydranet.core.errors import HydranetError
from hydranet.core.run import read_metrics

MISSING_MATPLOTLIB = "hydranet plot needs matplotlib: pip install 'hydranet[plot]'"
PANEL_SIZE = (4.8, 3.3)  # inches per panel
MAX_COLUMNS = 3
DPI = 100
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")


@dataclass
class RunSeries:
    """metrics.csv by column family: one list per task (and metric), aligned with `epochs`."""

    epochs: list[float]
    tasks: list[str] = field(default_factory=list)
    train_loss: dict[str, list[float]] = field(default_factory=dict)
    val_loss: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=dict)


def _number(value: Any) -> float:
    return value if isinstance(value, float) else math.nan  # read_metrics leaves unparsable cells as text


def series_from_rows(rows: Sequence[Mapping[str, Any]]) -> RunSeries:
    """Group metrics.csv columns (`train_loss.T`, `val_loss.T`, `val.T.METRIC`, `weight.T`) by task."""
    columns = list(rows[0]) if rows else []
    epochs = [_number(row.get("epoch")) for row in rows]
    if any(math.isnan(e) for e in epochs):
        epochs = [float(i) for i in range(1, len(rows) + 1)]
    data = RunSeries(epochs)

    def values(column: str) -> list[float]:
        return [_number(row.get(column)) for row in rows]

    def task(name: str) -> str:
        if name not in data.tasks:
            data.tasks.append(name)
        return name

    for column in columns:
        family, _, rest = column.partition(".")
        if not rest:
            continue
        if family == "train_loss":
            data.train_loss[task(rest)] = values(column)
        elif family == "val_loss":
            data.val_loss[task(rest)] = values(column)
        elif family == "weight":
            data.weights[task(rest)] = values(column)
        elif family == "val" and "." in rest:
            name, metric = rest.split(".", 1)
            data.metrics.setdefault(task(name), {})[metric] = values(column)
    return data


def load_series(run: str | Path) -> RunSeries:
    """The run folder's metrics.csv as series; a missing or empty file is a message naming the path."""
    run = Path(run)
    if run.is_file():
        raise HydranetError(f"{run} is a file, not a run folder; pass the run folder that holds it, {run.parent}")
    if not run.is_dir():
        raise HydranetError(f"run folder not found: {run}. Pass the folder `hydranet train` wrote "
                            "(it holds metrics.csv), e.g. runs/demo-20260101-120000.")
    csv_path = run / "metrics.csv"
    if not csv_path.is_file():
        raise HydranetError(f"no metrics.csv in {run} (looked for {csv_path}); is it a run folder, and has its "
                            "first epoch finished?")
    try:
        rows = read_metrics(csv_path)
    except (OSError, UnicodeDecodeError) as error:
        raise HydranetError(f"cannot read {csv_path}: {error}") from None
    if not rows:
        raise HydranetError(f"{csv_path} has no epochs yet; plot it after the first epoch has finished.")
    return series_from_rows(rows)


def _matplotlib() -> tuple[Any, Any, Any]:
    try:
        # The package itself first: a missing (or blocked) matplotlib is reported even when its
        # submodules are still cached in sys.modules.
        importlib.import_module("matplotlib")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise HydranetError(MISSING_MATPLOTLIB) from None
    return Figure, FigureCanvasAgg, MaxNLocator


def plot_run(run: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write losses.png, metrics.png and weights.png (those the CSV has data for); return their paths."""
    data = load_series(run)
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    out = Path(out_dir) if out_dir is not None else Path(run)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HydranetError(f"cannot create the output folder {out}: {error.strerror or error}") from None
    name = Path(run).resolve().name
    x = data.epochs

    def grid(panels: int, title: str) -> tuple[Any, list[Any]]:
        columns = min(MAX_COLUMNS, panels)
        rows = math.ceil(panels / columns)
        figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows + 0.6), dpi=DPI,
                        layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
        for unused in axes[panels:]:
            unused.set_visible(False)
        figure.suptitle(f"{name}: {title}")
        for ax in axes[:panels]:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
        return figure, axes[:panels]

    written = []
    loss_tasks = [t for t in data.tasks if t in data.train_loss or t in data.val_loss]
    if loss_tasks:
        figure, axes = grid(len(loss_tasks), "per-task loss")
        for ax, task in zip(axes, loss_tasks):
            if task in data.train_loss:
                ax.plot(x, data.train_loss[task], marker="o", markersize=3, label="training")
            if task in data.val_loss:
                ax.plot(x, data.val_loss[task], marker="s", markersize=3, label="validation")
            ax.set_title(f"{task} loss")
            ax.set_ylabel("loss")
            ax.legend()
        written.append(_save(figure, out / "losses.png"))

    panels = [(task, metric, values) for task in data.tasks for metric, values in data.metrics.get(task, {}).items()]
    if panels:
        figure, axes = grid(len(panels), "validation metrics")
        for ax, (task, metric, values) in zip(axes, panels):
            ax.plot(x, values, marker="o", markersize=3, color="C2", label=f"{task} {metric} (validation)")
            ax.set_title(f"{task}: {metric}")
            ax.set_ylabel(metric)
            ax.legend()
        written.append(_save(figure, out / "metrics.png"))

    if data.weights:
        figure, (ax,) = grid(1, "weight of each task")
        figure.set_size_inches(7.0, 4.2)
        weighted = [task for task in data.tasks if task in data.weights]
        for i, task in enumerate(weighted):
            # Equal weights (sum, or any strategy's first epoch) draw on top of each other; distinct
            # markers and dash patterns keep every task visible.
            ax.plot(x, data.weights[task], marker=MARKERS[i % len(MARKERS)], markersize=5,
                    linestyle=LINESTYLES[i % len(LINESTYLES)], label=task)
        ax.set_ylabel("weight")
        ax.legend()
        written.append(_save(figure, out / "weights.png"))
    return written


def _save(figure: Any, path: Path) -> Path:
    """Write the PNG under a temporary name and rename it, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise HydranetError(f"cannot write {path}: {error.strerror or error}") from None
    return path


__all__ = ["MISSING_MATPLOTLIB", "RunSeries", "load_series", "plot_run", "series_from_rows"]
