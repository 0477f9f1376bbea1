"""How `hydranet compare` shows a comparison: a table for the terminal, CSV and JSON for other tools.

Apart from comparison.py, which assembles the comparison (Δm, seed groups:
delta_m.py) from the runs compare.py reads, so that each module has one job;
the sweep writes its compare.csv through `comparison_csv`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from typing import Any

from hydranet.core.comparison import Comparison, TaskReference
from hydranet.core.delta_m import SEED_KEYS, RunGroup
from hydranet.core.param_text import leaf_text, params_text
from hydranet.core.report import format_table, format_value
from hydranet.core.run import csv_number
from hydranet.core.run_record import RunRecord, run_differences
from hydranet.core.wording import english_list


def _value(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None  # JSON has no NaN


#: the name of the training-time field (JSON) and column (CSV): the median seconds of a run's training epochs
SECONDS = "train_seconds_per_epoch"


def _group_seconds(group: RunGroup) -> tuple[float, float]:
    """The group's training seconds per epoch, mean and std: NaN where its runs recorded none."""
    return group.train_seconds or (math.nan, math.nan)


def comparison_dict(comparison: Comparison) -> dict[str, Any]:
    """Everything the table shows, for programs: NaN is null, Δm in percent."""
    ref = comparison.reference
    per_task = comparison.task_references
    return {
        "reference": None if per_task else str(ref.path),
        # with a reference per task: each one, and the run the "differs" of each run are told against
        **({"references": [_reference_dict(comparison, r) for r in per_task], "differs_from": str(ref.path)}
           if per_task else {}),
        "epoch": comparison.epoch,
        **({"split": "test"} if comparison.split == "test" else {}),
        "compared": [{"task": t, "metric": m, "higher_is_better": comparison.higher_is_better(t, m)}
                     for t, m in comparison.shared],
        "runs": [{
            "run": str(run.path), "name": run.label, "weighting": run.weighting,
            "weighting_params": run.weighting_params, "backbone": run.backbone,
            "epochs_done": run.epochs_done, "epochs_planned": run.epochs_planned, "best_epoch": run.best_epoch,
            "epochs_missing": run.missing_epochs,
            "epoch": run.epoch,
            "metrics": {t: {m: _value(v) for m, v in values.items()} for t, values in run.metrics.items()},
            "delta_m": _value(comparison.delta_m[run.path]),
            SECONDS: _value(run.train_seconds),
            "differs": run_differences(ref, run),
        } for run in comparison.runs],
        **({"groups": [_group_dict(comparison, g) for g in comparison.groups]} if comparison.groups else {}),
        "notes": comparison.notes,
    }


def _reference_dict(comparison: Comparison, reference: TaskReference) -> dict[str, Any]:
    """A task's reference for programs: the folder as given, its runs and seeds, and the values of its task's
    compared metrics (means over its runs) that Δm is measured against, with their sample std."""
    group, metrics = reference.group, [m for t, m in comparison.shared if t == reference.task]
    return {"task": reference.task, "given": reference.given, "name": reference.label,
            "runs": [str(run.path) for run in group.runs], "n": group.n, "seeds": group.seeds,
            "metrics": {m: _value(group.metrics[reference.task][m]) for m in metrics},
            "std": {m: _value(group.std[reference.task][m]) for m in metrics}}


def _group_dict(comparison: Comparison, group: RunGroup) -> dict[str, Any]:
    """A group for programs: its runs and seeds, each metric's mean and sample std, Δm on the means, each run's Δm
    against the reference group's means and their mean and sample std, the training seconds per epoch."""
    def values(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
        return {t: {m: _value(v) for m, v in metrics.items()} for t, metrics in table.items()}

    delta_mean, delta_std = comparison.group_delta_m_spread(group)
    seconds_mean, seconds_std = _group_seconds(group)
    return {"name": group.label, "runs": [str(run.path) for run in group.runs], "n": group.n,
            "seeds": group.seeds, "weighting": group.runs[0].weighting,
            "weighting_params": group.runs[0].weighting_params, "backbone": group.runs[0].backbone,
            "mean": values(group.metrics), "std": values(group.std),
            "delta_m": _value(comparison.group_delta_m[group.path]),
            "delta_m_runs": [_value(v) for v in comparison.group_run_delta_m[group.path]],
            "delta_m_mean": _value(delta_mean), "delta_m_std": _value(delta_std),
            f"{SECONDS}_mean": _value(seconds_mean), f"{SECONDS}_std": _value(seconds_std),
            "differs": _group_differences(comparison, group)}


def _group_differences(comparison: Comparison, group: RunGroup) -> dict[str, Any]:
    """What, besides the seed, sets a group apart from the reference's group (references per task: the first
    run's)."""
    reference = next(g for g in comparison.groups or () if comparison.reference in g.runs)
    return {key: value for key, value in run_differences(reference.runs[0], group.runs[0]).items()
            if key not in SEED_KEYS}


def comparison_json(comparison: Comparison) -> str:
    return json.dumps(comparison_dict(comparison), indent=2) + "\n"


def comparison_csv(comparison: Comparison) -> str:
    """One line per run: run, weighting, backbone, epochs, the shared metrics as task.metric, delta_m_percent,
    train_seconds_per_epoch, weighting_params (last, so that the columns before keep their places).

    Grouped by seed, one line per group: its runs, n, seeds, each metric's mean and std, delta_m_percent (on the
    means), delta_m_percent.mean and .std (over its runs' own), train_seconds_per_epoch.mean and .std. A value
    the runs do not have is an empty cell.

    With a reference per task, a last column, reference_for, is empty on those lines, and one line per task's
    reference follows them, which names its task there: its task's metrics (its runs' means) and no delta_m.
    """
    if comparison.groups:
        return _groups_csv(comparison)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    per_task = comparison.task_references
    writer.writerow(["run", "weighting", "backbone", "epochs_done", "epochs_planned", "best_epoch", "epoch",
                     *(f"{t}.{m}" for t, m in comparison.shared), "delta_m_percent", SECONDS, WEIGHTING_PARAMS,
                     *([REFERENCE_FOR] if per_task else [])])
    for run in comparison.runs:
        values = [run.metrics[t][m] for t, m in comparison.shared] + [comparison.delta_m[run.path]]
        values.append(math.nan if run.train_seconds is None else run.train_seconds)
        best = "" if run.best_epoch is None else run.best_epoch
        writer.writerow([str(run.path), run.weighting, run.backbone, run.epochs_done, run.epochs_planned, best,
                         run.epoch, *map(_csv_value, values), _params_text(run), *([""] if per_task else [])])
    for ref in per_task:
        runs, only = ref.group.runs, _only_task(ref.task)
        cells = [";".join(dict.fromkeys(str(value) for value in values)) for values in zip(
            *((run.epochs_done, run.epochs_planned, "" if run.best_epoch is None else run.best_epoch, run.epoch)
              for run in runs))]
        writer.writerow([";".join(str(run.path) for run in runs), runs[0].weighting, runs[0].backbone, *cells,
                         *(_csv_value(only(ref.group.metrics, t, m)) for t, m in comparison.shared), "",
                         _csv_value(_group_seconds(ref.group)[0]), "", ref.task])
    return buffer.getvalue()


#: the CSV column that names, on a line of a task's reference (`--ref TASK=RUN`), its task
REFERENCE_FOR = "reference_for"


def _only_task(task: str) -> Any:
    """(table, task, metric) -> the value, for `task`'s metrics only (NaN, an empty cell, for the others'):
    what a task's reference line of the CSV holds."""
    return lambda table, t, m: table[t][m] if t == task else math.nan


#: the CSV column of the weighting parameters that set a run apart from others of its weighting (`weights.age=2`)
WEIGHTING_PARAMS = "weighting_params"


def _params_text(run: RunRecord) -> str:
    """The weighting_params cell: what the table's weighting column shows in parentheses; empty where nothing."""
    return params_text(run.weighting_params)


def _csv_value(value: float) -> Any:
    return "" if math.isnan(value) else csv_number(value)


def _groups_csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    per_task = comparison.task_references
    writer.writerow(["group", "runs", "n", "seeds", "weighting", "backbone",
                     *(f"{t}.{m}.{what}" for t, m in comparison.shared for what in ("mean", "std")),
                     "delta_m_percent", "delta_m_percent.mean", "delta_m_percent.std", f"{SECONDS}.mean",
                     f"{SECONDS}.std", WEIGHTING_PARAMS, *([REFERENCE_FOR] if per_task else [])])
    for g in comparison.groups or ():
        mean, std = g.metrics, g.std
        writer.writerow([g.label, ";".join(str(run.path) for run in g.runs), g.n, ";".join(map(str, g.seeds)),
                         g.runs[0].weighting, g.runs[0].backbone,
                         *(_csv_value(table[t][m]) for t, m in comparison.shared for table in (mean, std)),
                         _csv_value(comparison.group_delta_m[g.path]),
                         *map(_csv_value, comparison.group_delta_m_spread(g)), *map(_csv_value, _group_seconds(g)),
                         _params_text(g.runs[0]), *([""] if per_task else [])])
    for ref in per_task:
        g, only = ref.group, _only_task(ref.task)
        writer.writerow([ref.label, ";".join(str(run.path) for run in g.runs), g.n, ";".join(map(str, g.seeds)),
                         g.runs[0].weighting, g.runs[0].backbone,
                         *(_csv_value(only(table, t, m)) for t, m in comparison.shared for table in (g.metrics, g.std)),
                         "", "", "", *map(_csv_value, _group_seconds(g)), "", ref.task])
    return buffer.getvalue()


def comparison_table(comparison: Comparison) -> str:
    """The table, a line above saying at which epoch and against which run, a legend and the notes below."""
    if comparison.groups:
        return _groups_table(comparison)
    ref = comparison.reference
    changes = {run.path: _differs_text(run_differences(ref, run), run) for run in comparison.runs}
    with_changes = any(text != "-" for text in changes.values())
    headers = ["run", "weighting", "backbone", "epochs", "best epoch", TIME,
               *(f"{t}.{m}" for t, m in comparison.shared), "delta_m%",
               *([_differs_header(comparison)] if with_changes else [])]
    rows = []
    for run in comparison.runs:
        rows.append([run.label, run.weighting_label, run.backbone, run.epochs_text,
                     "-" if run.best_epoch is None else run.best_epoch, _seconds(run.train_seconds),
                     *(run.metrics[t][m] for t, m in comparison.shared),
                     _delta_text(comparison.delta_m[run.path], comparison.is_reference(run)),
                     *([changes[run.path]] if with_changes else [])])
    return _framed(comparison, f"{_which(comparison)} of each run at {_at(comparison)}; {_reference_words(comparison)}",
                   format_table(headers, rows), f"delta_m%: the mean relative change against {_against(comparison)}")


def _reference_words(comparison: Comparison) -> str:
    """The title's end: `reference: w-sum`, or with one per task `references: age: runs/stl_age, ...`."""
    if comparison.task_references:
        return f"references: {comparison.references_text}"
    return f"reference: {comparison.reference_row.label}"


def _against(comparison: Comparison, means: str = "") -> str:
    """What the legend says Δm is measured against: the reference (`means`: "'s means", for a group)."""
    if comparison.task_references:
        return ("each task's own reference, for its task's metrics (a reference of several seeds at their means; "
                "the notes give its values)")
    return comparison.reference_row.label + means


def _differs_header(comparison: Comparison) -> str:
    """The last column's header: what the runs differ from, the reference, or with references per task the first
    run (its group)."""
    if comparison.task_references:
        return f"differs from {comparison.reference_row.label}"
    return "differs from the reference"


#: the training-time column of the table, and its legend
TIME = "train s/epoch"
TIME_LEGEND = (f"{TIME}: the median seconds of a run's training epochs (validation not counted), from its summary.json "
               "timings, or its metrics.csv before it finished; - where it recorded none. Compare it only between "
               "runs on the same machine.")


def _seconds(seconds: float | None, std: float = math.nan) -> str:
    """A training-time cell: the seconds to 3 significant digits (whole from 100 s on), a group's std to as many
    decimals; "-" where there are none."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    decimals = max(0, 2 - math.floor(math.log10(abs(seconds)))) if seconds else 2
    return f"{seconds:.{decimals}f}" + ("" if math.isnan(std) else f" ± {std:.{decimals}f}")


def _differs_text(changes: dict[str, Any], run: RunRecord) -> str:
    """The "differs from the reference" cell: `key=value, ...`, or "-"; less the weighting parameters the
    weighting column shows already."""
    shown = {f"weighting.{key}" for key in run.weighting_params}
    return ", ".join(f"{k}={leaf_text(v)}" for k, v in changes.items() if k not in shown) or "-"


def _delta_text(delta: float, is_reference: bool) -> str:
    """The delta_m% cell: "0 (ref)" for the reference, "-" where it cannot be computed, else signed."""
    return "0 (ref)" if is_reference else "-" if math.isnan(delta) else f"{delta:+.2f}"


def _at(comparison: Comparison) -> str:
    return {"best": "its best epoch (the lowest total validation loss: what best.pt holds)",
            "last": "its last epoch"}.get(comparison.epoch, f"epoch {comparison.epoch}")


def _which(comparison: Comparison) -> str:
    """What the table's metrics are: the validation split's (which chose the epoch), or the held-out test split's."""
    return ("test metrics (the held-out test split, scored once with the weights)" if comparison.split == "test"
            else "validation metrics")


def _framed(comparison: Comparison, title: str, table: str, delta_m: str) -> str:
    """A table with its title line above, and the legend (`delta_m` starts it, the time column ends it) and the
    notes below."""
    legend = (f"{delta_m}, over the tasks (each task's metrics averaged first), in percent; positive is better. "
              + _directions_text(comparison))
    lines = [title, "", table, "", textwrap.fill(legend, 100), textwrap.fill(TIME_LEGEND, 100)]
    if comparison.notes:
        lines += ["", "notes:", *(f"  {note}" for note in comparison.notes)]
    return "\n".join(lines)


def _directions_text(comparison: Comparison) -> str:
    """Which way each compared metric is better, worded for the metrics shown: "Lower is better for age.mae,
    higher for the others", or where they all go one way, "Lower is better for age.mae" (one metric) or
    "Higher is better for every metric"."""
    lower = [f"{t}.{m}" for t, m in comparison.shared if not comparison.higher_is_better(t, m)]
    higher = [f"{t}.{m}" for t, m in comparison.shared if comparison.higher_is_better(t, m)]
    if lower and higher:
        return f"Lower is better for {english_list(lower)}, higher for the others."
    which, names = ("Lower", lower) if lower else ("Higher", higher)
    return f"{which} is better for {names[0] if len(names) == 1 else 'every metric'}."


def _groups_table(comparison: Comparison) -> str:
    """One row per group of seeds: each metric, Δm and the training time as mean ± sample std over its n runs."""
    groups = comparison.groups or []
    changes = {g.path: _differs_text(_group_differences(comparison, g), g.runs[0]) for g in groups}
    with_changes = any(text != "-" for text in changes.values())
    headers = ["runs", "n", "seeds", "weighting", "backbone", "epochs", TIME,
               *(f"{t}.{m}" for t, m in comparison.shared), "delta_m%",
               *([_differs_header(comparison)] if with_changes else [])]
    rows = []
    for g in groups:
        mean, std = g.metrics, g.std
        epochs = ",".join(dict.fromkeys(run.epochs_text for run in g.runs))
        rows.append([g.label, g.n, ",".join(map(str, g.seeds)), g.runs[0].weighting_label, g.runs[0].backbone, epochs,
                     _seconds(*_group_seconds(g)),
                     *(_mean_std(mean[t][m], std[t][m]) for t, m in comparison.shared),
                     _group_delta_text(*comparison.group_delta_m_spread(g), comparison.is_reference(g)),
                     *([changes[g.path]] if with_changes else [])])
    keys = english_list(SEED_KEYS)
    title = (f"{_which(comparison)} at each run's {_at(comparison).removeprefix('its ')}, the runs that differ only in "
             f"{keys} grouped: mean ± sample std over n runs; {_reference_words(comparison)}")
    return _framed(comparison, title, format_table(headers, rows),
                   f"delta_m%: each run's mean relative change against {_against(comparison, MEANS)}, shown as mean ± "
                   "sample std over the group's runs (the mean is the delta_m of the group's means where "
                   "every run has every metric)")


#: what a group's Δm is measured against: the reference group's means
MEANS = "'s means"


def _group_delta_text(mean: float, std: float, is_reference: bool) -> str:
    """A group's delta_m% cell: mean ± std of its runs' Δm; "(ref)" after the reference group's (mean 0)."""
    spread = "" if math.isnan(std) else f" ± {std:.2f}"
    if is_reference:
        return f"0{spread} (ref)"
    return "-" if math.isnan(mean) else f"{mean:+.2f}{spread}"


def _mean_std(mean: float, std: float) -> str:
    return format_value(mean) if math.isnan(std) else f"{format_value(mean)} ± {format_value(std)}"


