"""Plain-text tables for the terminal: the end-of-training table, eval and predict output."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def format_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to line up, two spaces apart, with no trailing spaces (they show up in diffs and logs)."""
    cells = [[format_value(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)])


#: relative difference under which a metric and its baseline are the same figure (float32 sums differ by ~1e-7)
TIE = 1e-6


def metrics_table(metrics: Mapping[str, Mapping[str, float]], baselines: Mapping[str, Mapping[str, float]],
                  higher_is_better: Mapping[str, Mapping[str, bool]]) -> str:
    """task | metric | value | constant baseline | beats it?"""
    rows = []
    for task, values in metrics.items():
        for metric, value in values.items():
            base = baselines.get(task, {}).get(metric, math.nan)
            better = "-"
            if not (math.isnan(base) or math.isnan(value)):
                higher = higher_is_better.get(task, {}).get(metric, True)
                ahead = (value - base) if higher else (base - value)
                # float32 noise is no win: an MAE of 16.374998 against a constant's 16.375 is a tie
                better = "yes" if ahead > TIE * max(abs(value), abs(base), 1e-12) else "no"
            rows.append([task, metric, value, base, better])
    return format_table(["task", "metric", "value", "baseline", "beats baseline"], rows)


def indent(text: str, prefix: str = "  ") -> str:
    """Every line of `text` with `prefix` before it (a table nested under its heading)."""
    return "\n".join(prefix + line for line in text.splitlines())


Metrics = Mapping[str, Mapping[str, float]]


def final_report(last: float | int, best: int, best_metrics: Metrics | None,
                 last_metrics: Metrics, validated: bool = True, monitor: str = "loss") -> tuple[str, Metrics]:
    """What `train` reports at the end: the best epoch's metrics, which best.pt holds and `eval` and `compare`
    report, under a heading that says which epoch they are; the last epoch's when no epoch could be the best.

    `validated=False` for a run without a validation split (data.val_fraction 0): its metrics were measured
    on the training images, and a heading saying "validation" would pass them off as held-out figures.
    """
    last = int(last)
    measured = "validation metrics" if validated else "training-set metrics (no validation split)"
    if best == last or not best_metrics:
        why = ("the best epoch: best.pt" if best == last else
               f"no epoch's validation {monitor} was finite: no best.pt")  # monitor: train.monitor, "loss" or T.M
        return f"{measured} after epoch {last} ({why})", last_metrics
    return (f"{measured} of epoch {best}, the best (best.pt; the last, epoch {last}, is in last.pt "
            "and metrics.csv)"), best_metrics


def test_report(result: Any) -> str:
    """The test split's metrics (data.test_fraction), beside the validation ones the best epoch was chosen on:
    what to report. Empty for a run without a test split, so its closing table reads as it always did."""
    if result.test is None:
        return ("test metrics: none, as no epoch had a finite validation loss (no best.pt to score on the test "
                "split)" if result.test_images else "")
    best = result.best or {}
    rows = [[task, metric, best.get(task, {}).get(metric, float("nan")), value]
            for task, values in result.test.items() for metric, value in values.items()]
    return (f"test metrics of epoch {result.best_epoch}, the best (best.pt), scored once on the held-out test "
            "split; the validation ones chose the epoch, report these:\n"
            + format_table(["task", "metric", "validation", "test"], rows))
