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
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydranet.core.errors import HydranetError
from hydranet.core.run import read_metrics
from hydranet.core.wording import english_list, plural

MISSING_MATPLOTLIB = "hydranet plot needs matplotlib: pip install 'hydranet[plot]'"
#: the files a plot writes (into a run folder, or a sweep folder, where `SWEEP/*` names them beside the runs)
CHARTS = ("losses.png", "metrics.png", "weights.png")
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
    out = _make_folder(Path(out_dir) if out_dir is not None else Path(run))
    name = Path(run).resolve().name
    x = data.epochs

    def grid(panels: int, title: str) -> tuple[Any, list[Any]]:
        return _grid((Figure, FigureCanvasAgg, MaxNLocator), panels, f"{name}: {title}")

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
            # Equal weights (sum, or any weighting's first epoch) draw on top of each other; distinct
            # markers and dash patterns keep every task visible.
            ax.plot(x, data.weights[task], marker=MARKERS[i % len(MARKERS)], markersize=5,
                    linestyle=LINESTYLES[i % len(LINESTYLES)], label=task)
        ax.set_ylabel("weight")
        _log_scale_if_wide(ax, [data.weights[task] for task in weighted])
        ax.legend()
        written.append(_save(figure, out / "weights.png"))
    return written


# ------------------------------------------------------------------ several runs


#: what the band around a group's mean line spans; the legend says it too
BAND = "± 1 sample std"
#: inches a row of the legend below the panels takes
LEGEND_ROW = 0.25


class NeedsOut(HydranetError):
    """Several runs and no --out: no one run's folder is theirs, so the caller must name one."""


@dataclass
class Line:
    """One line of a chart: a run's values over its own epochs, or a group's mean over the epochs all its runs have.

    A group's line has a band, `low` to `high`: the mean ± one sample std over its `n` runs, as compare shows it.
    """

    label: str
    epochs: list[float]
    values: list[float]
    low: list[float] | None = None
    high: list[float] | None = None
    n: int = 1


@dataclass
class RunsPlot:
    """What `plot_runs` drew: the files, each chart's panels and their lines, and what was left out and why."""

    written: list[Path]
    #: chart file name -> panel (its metrics.csv column: train_loss.age, val.age.mae, weight.age) -> lines
    charts: dict[str, dict[str, list[Line]]]
    notes: list[str] = field(default_factory=list)


def is_sweep_folder(folder: str | Path) -> bool:
    """Whether `folder` is a sweep folder (`hydranet train --sweep`'s), told without reading its compare.csv.

    A sweep folder is no run (no spec.yaml) but holds compare.csv or folders that are runs; `hydranet plot
    SWEEP` draws them all.
    """
    from hydranet.core.compare import COMPARE_CSV

    folder = Path(folder)
    return _holds_no_run(folder) and ((folder / COMPARE_CSV).is_file()
                                      or any((p / "spec.yaml").is_file() for p in folder.iterdir()))


def _holds_no_run(folder: Path) -> bool:
    """A folder that is not itself a run: what a sweep folder is, before what it holds is looked at."""
    return folder.is_dir() and not (folder / "spec.yaml").is_file() and not (folder / "metrics.csv").is_file()


def sweep_runs(folder: str | Path) -> list[Path] | None:
    """The run folders of a sweep folder (`is_sweep_folder`), in its compare.csv's order; None if not one.

    Runs compare.csv does not list (not yet compared) follow, by name.
    """
    from hydranet.core.compare import COMPARE_CSV, in_sweep_order

    folder = Path(folder)
    if not _holds_no_run(folder):
        return None
    runs = sorted(p for p in folder.iterdir() if (p / "spec.yaml").is_file())  # listed once, not again to tell
    if not runs and not (folder / COMPARE_CSV).is_file():
        return None
    return in_sweep_order(folder, runs)


def plot_runs(paths: Sequence[str | Path], out_dir: str | Path | None = None, *, group: bool = True,
              skip_bad: bool = False, components: Any = None) -> RunsPlot:
    """Draw losses.png, metrics.png and weights.png with one line per run (or per group of seeds) in `out_dir`.

    `paths` are run folders, or sweep folders, whose runs are all drawn (a run of a sweep folder that cannot be
    read is left out with a note, as the sweep's own comparison leaves it out). The runs are read, checked,
    labelled and grouped as `hydranet compare` does it: runs that differ only in train.seed are one line, their
    mean, in a band of ± one sample std (unless not `group`). Only what every run has is drawn; notes say
    what was left out. `out_dir` defaults to the sweep folder when `paths` is one.
    """
    from hydranet.core.compare import read_runs
    from hydranet.core.comparison import label_runs, name_groups
    from hydranet.core.delta_m import group_runs

    out = _charts_folder(paths, out_dir)
    records, reference, skipped = read_runs(paths, epoch="last", skip_bad=skip_bad, components=components)
    label_runs(records)
    columns = {run.path: _columns(run.series) for run in records}  # read_runs read each metrics.csv
    panels, left = _shared_panels(records, reference, columns)
    drawn = {c for chosen in panels.values() for c in chosen}
    notes = skipped + left
    if group:
        groups, group_notes = group_runs(records)
        notes += group_notes
        name_groups(groups)  # as compare names them, less the seeds a legend entry says itself
    else:
        from hydranet.core.delta_m import RunGroup

        groups = [RunGroup([run], run.label) for run in records]
    charts = {chart: {c: [] for c in chosen} for chart, chosen in panels.items() if chosen}
    for g in groups:
        lines, note = _group_lines(g.label, [columns[run.path] for run in g.runs], drawn)
        notes += [note] if note else []
        for chart in charts.values():
            for column, panel in chart.items():
                panel.append(lines[column])
    title = Path(paths[0]).resolve().name if len(paths) == 1 else plural(len(records), "run")
    written = _draw_runs(charts, out, title)
    notes += [f"{chart}: {_panel_title(column)} is drawn on a log scale, its values spanning more than "
              f"{WIDE_RANGE:g}x ({_span(panel)}), so that the smaller ones are not flattened"
              for chart, chosen in charts.items() for column, panel in chosen.items()
              if _is_wide([line.values for line in panel])]
    return RunsPlot(written, charts, notes)


def _shared_panels(records: Sequence[Any], reference: Any,
                   columns: Mapping[Path, Mapping[str, Any]]) -> tuple[dict[str, list[str]], list[str]]:
    """Each chart's panels (metrics.csv columns) that every run has, metrics as compare shares them, and notes
    on what was left out; nothing shared at all is an error naming each run's tasks."""
    from hydranet.core.comparison import shared_metrics

    shared, left_metrics = shared_metrics(records, reference)
    common = [c for c in columns[reference.path] if all(c in own for own in columns.values())]
    panels = {"losses.png": [c for c in common if c.startswith(("train_loss.", "val_loss."))],
              "metrics.png": [f"val.{t}.{m}" for t, m in shared if f"val.{t}.{m}" in common],
              "weights.png": [c for c in common if c.startswith("weight.")]}
    drawn = {c for chosen in panels.values() for c in chosen}
    if not drawn:
        raise HydranetError("nothing to plot together: no task is common to all these runs ("
                            + "; ".join(f"{run.path}: {', '.join(run.higher_is_better) or '(none)'}"
                                        for run in records) + "); plot runs of the same tasks.")
    return panels, _left_out_notes(records, columns, drawn, left_metrics)


def expand_sweep_folders(paths: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """Each path, or a sweep folder's runs in its place, as (path, whether it came from a sweep folder).

    What `hydranet plot SWEEP` and `hydranet compare SWEEP` share (`read_runs` calls it): a sweep folder's runs
    in its order (`sweep_runs`).
    """
    expanded: list[tuple[Path, bool]] = []
    for path in map(Path, paths):
        runs = sweep_runs(path)
        if runs is None:
            expanded.append((path, False))
        elif not runs:
            raise HydranetError(f"{path} holds a sweep's compare.csv but no run folder; pass the folder that holds "
                                "the sweep's runs")
        else:
            expanded += [(run, True) for run in runs]
    return expanded


def _charts_folder(paths: Sequence[str | Path], out_dir: str | Path | None) -> Path:
    """`out_dir`, else the one sweep folder given; several runs of no one folder need --out."""
    if out_dir is not None:
        return Path(out_dir)
    if len(paths) == 1 and is_sweep_folder(paths[0]):
        return Path(paths[0])
    raise NeedsOut(f"{plural(len(paths), 'run')} given: pass --out DIR, the folder for their charts (with several "
                   "runs no run folder is theirs; a sweep folder given alone is its own default)")


def _columns(data: RunSeries) -> dict[str, tuple[list[float], list[float]]]:
    """Every drawable metrics.csv column -> (epochs, values); a resumed run's repeated epoch counts once, its last row
    (as compare reads it)."""
    last = {epoch: i for i, epoch in enumerate(data.epochs)}
    rows = sorted(last.values(), key=lambda i: data.epochs[i])
    families = [("train_loss", data.train_loss), ("val_loss", data.val_loss), ("weight", data.weights)]
    out = {}
    for task in data.tasks:
        for family, table in families:
            if task in table:
                out[f"{family}.{task}"] = table[task]
        for metric, values in data.metrics.get(task, {}).items():
            out[f"val.{task}.{metric}"] = values
    return {c: ([data.epochs[i] for i in rows], [values[i] for i in rows]) for c, values in out.items()}


def _left_out_notes(records: Sequence[Any], columns: Mapping[Path, Mapping[str, Any]], drawn: set[str],
                    left_metrics: Mapping[Path, list[str]]) -> list[str]:
    """Per run, what it has that not every run has and so is not drawn: metrics as compare names them, then the
    losses and weights of tasks not every run has."""
    notes = []
    for run in records:
        left = list(left_metrics[run.path])
        left += [c for c in columns[run.path] if c not in drawn and not c.startswith("val.")]
        if left:
            notes.append(f"{run.label}: not drawn, as not every run has {'it' if len(left) == 1 else 'them'}: "
                         f"{', '.join(left)}")
    return notes


def _group_lines(label: str, members: Sequence[Mapping[str, tuple[list[float], list[float]]]],
                 columns: set[str]) -> tuple[dict[str, Line], str | None]:
    """One Line per column: the run's own, or the members' mean and band over the epochs all of them have (and a
    note when some member has epochs the others lack)."""
    from hydranet.core.delta_m import sample_std

    if len(members) == 1:
        return {c: Line(label, *members[0][c]) for c in columns}, None
    lines: dict[str, Line] = {}
    for column in columns:
        per_run = [dict(zip(*run[column])) for run in members]
        epochs = sorted(set.intersection(*(set(values) for values in per_run)))
        at = [[values[e] for values in per_run] for e in epochs]
        mean = [statistics.fmean(v) for v in at]
        std = [sample_std(v) for v in at]
        lines[column] = Line(f"{label} (mean of {len(members)} seeds)", epochs, mean,
                             [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)], len(members))
    own = [len(next(iter(run.values()))[0]) for run in members]  # every column of a run has its epochs
    if len(set(own)) == 1:
        return lines, None
    kept = len(lines[next(iter(columns))].epochs)
    return lines, (f"{label}: its runs have {english_list(map(str, own))} epochs; its mean and band cover only "
                   f"the {plural(kept, 'epoch')} all of them have")


def _draw_runs(charts: Mapping[str, Mapping[str, list[Line]]], out: Path, title: str) -> list[Path]:
    """Each chart a grid of panels (losses: training | validation, a row per task), one legend below them all."""
    matplotlib = _matplotlib()
    _make_folder(out)
    what = {"losses.png": "per-task loss", "metrics.png": "validation metrics", "weights.png": "weight of each task"}
    written = []
    for chart, panels in charts.items():
        lines = next(iter(panels.values()))
        rows = math.ceil(len(lines) / MAX_COLUMNS)
        columns = 2 if chart == "losses.png" and len(panels) % 2 == 0 else MAX_COLUMNS
        figure, axes = _grid(matplotlib, len(panels), f"{title}: {what[chart]}", columns, 0.3 + LEGEND_ROW * rows)
        handles = []
        for ax, (column, panel) in zip(axes, panels.items()):
            handles = [_draw_line(ax, i, line) for i, line in enumerate(panel)]
            ax.set_title(_panel_title(column))
            ax.set_ylabel(_panel_unit(column))
            _log_scale_if_wide(ax, [line.values for line in panel])
        banded = any(line.low is not None for line in lines)
        _fit_legend(figure, handles, [line.label for line in lines],
                    f"a group of seeds: its mean, shaded {BAND} over its runs" if banded else None)
        written.append(_save(figure, out / chart))
    return written


def _fit_legend(figure: Any, handles: list[Any], labels: list[str], title: str | None) -> None:
    """One legend below the panels, in as many columns (up to MAX_COLUMNS) as fit the figure's width.

    Long names ("weighting=cagrad (mean of 2 seeds)") in 3 columns under a figure of 2 panels were cut at both
    sides: fewer columns, the figure made taller for the legend's rows (`_grid` left room for MAX_COLUMNS a row);
    where one column is still too wide, the figure is widened to it.
    """
    renderer = figure.canvas.get_renderer()
    width, height = figure.get_size_inches()
    ncols = min(MAX_COLUMNS, len(labels))
    while True:
        legend = figure.legend(handles, labels, loc="outside lower center", ncols=ncols, title=title)
        needed = legend.get_window_extent(renderer).width / figure.dpi + 0.2  # inches, with a margin
        if needed <= width or ncols == 1:
            break
        legend.remove()
        ncols -= 1
    rows = math.ceil(len(labels) / ncols) - math.ceil(len(labels) / MAX_COLUMNS)
    figure.set_size_inches(max(width, needed), height + LEGEND_ROW * rows)


#: a panel whose positive values span more than this factor is drawn on a log scale (Nash-MTL's weights of 20 to
#: 38 beside others' of about 1 left every other line flat along the bottom)
WIDE_RANGE = 10.0


def _finite(values_list: Sequence[Sequence[float]]) -> list[float]:
    return [v for values in values_list for v in values if math.isfinite(v)]


def _is_wide(values_list: Sequence[Sequence[float]]) -> bool:
    """Whether the values are all positive and span more than WIDE_RANGE (a log scale shows them all)."""
    values = _finite(values_list)
    return bool(values) and min(values) > 0 and max(values) / min(values) > WIDE_RANGE


def _span(panel: Sequence[Line]) -> str:
    values = _finite([line.values for line in panel])
    return f"{min(values):.3g} to {max(values):.3g}"


def _log_scale_if_wide(ax: Any, values_list: Sequence[Sequence[float]]) -> None:
    """A log y axis, said in its label, for values `_is_wide` finds too far apart for a linear one."""
    if _is_wide(values_list):
        ax.set_yscale("log")
        ax.set_ylabel(f"{ax.get_ylabel()} (log scale)")


def _draw_line(ax: Any, i: int, line: Line) -> Any:
    """Line `i` in the same colour, dash and marker in every panel; a group's band under it. Its legend handle.

    Runs that learn alike (sum and DWA in their first epochs) draw on top of each other: the dashes and
    markers, which cycle apart from the colours, keep the line below visible.
    """
    style = {"color": f"C{i % 10}", "linestyle": LINESTYLES[i % len(LINESTYLES)]}
    (drawn,) = ax.plot(line.epochs, line.values, marker=MARKERS[i % len(MARKERS)], markersize=4, **style)
    if line.low is None or line.high is None:
        return drawn
    band = ax.fill_between(line.epochs, line.low, line.high, color=style["color"], alpha=0.2, linewidth=0)
    return (band, drawn)


def _panel_title(column: str) -> str:
    family, _, rest = column.partition(".")
    return {"train_loss": f"{rest} training loss", "val_loss": f"{rest} validation loss",
            "weight": f"{rest} weight"}.get(family, rest.replace(".", ": ", 1))


def _panel_unit(column: str) -> str:
    family, _, rest = column.partition(".")
    return {"train_loss": "loss", "val_loss": "loss", "weight": "weight"}.get(family, rest.partition(".")[2])


def _grid(matplotlib: tuple[Any, Any, Any], panels: int, title: str, columns: int = MAX_COLUMNS,
          extra_height: float = 0.0) -> tuple[Any, list[Any]]:
    """A figure of `panels` small panels, `columns` a row, each with an integer epoch axis and a light grid.

    `extra_height` (inches) leaves room below the panels for a legend shared by all of them.
    """
    Figure, FigureCanvasAgg, MaxNLocator = matplotlib
    columns = min(columns, panels)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows + 0.6 + extra_height), dpi=DPI,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[panels:]:
        unused.set_visible(False)
    figure.suptitle(title)
    for ax in axes[:panels]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    return figure, axes[:panels]


def _make_folder(out: Path) -> Path:
    """The charts' folder, made if need be; a message naming it where it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HydranetError(f"cannot create the output folder {out}: {error.strerror or error}") from None
    return out


#: up to this many epochs an epoch axis gets a tick at each epoch (MaxNLocator's integer ticks need a wider range:
#: over one epoch's 0.95 to 1.05 it falls back to 0.96, 0.98, ...)
FEW_EPOCHS = 6


def _epoch_ticks(figure: Any) -> None:
    """Give every epoch axis of a run of few epochs a tick at each epoch, half an epoch of room either side."""
    for ax in figure.axes:
        if not ax.get_visible() or ax.get_xlabel() != "epoch" or not ax.has_data():
            continue
        low, high = ax.dataLim.intervalx
        if not (math.isfinite(low) and math.isfinite(high)) or high - low >= FEW_EPOCHS:
            continue
        ticks = list(range(math.ceil(low), math.floor(high) + 1)) or [round(low)]
        ax.set_xticks(ticks)
        ax.set_xlim(min(low, ticks[0]) - 0.5, max(high, ticks[-1]) + 0.5)


def _save(figure: Any, path: Path) -> Path:
    """Write the PNG under a temporary name and rename it, so a reader never sees half a file.

    Its epoch axes get their ticks first (`_epoch_ticks`), when their data is known."""
    _epoch_ticks(figure)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise HydranetError(f"cannot write {path}: {error.strerror or error}") from None
    return path


__all__ = ["BAND", "CHARTS", "MISSING_MATPLOTLIB", "Line", "NeedsOut", "RunSeries", "RunsPlot", "expand_sweep_folders",
           "is_sweep_folder", "load_series", "plot_run", "plot_runs", "series_from_rows", "sweep_runs"]
