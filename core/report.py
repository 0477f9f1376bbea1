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
                better = "yes" if (value > base if higher else value < base) else "no"
            rows.append([task, metric, value, base, better])
    return format_table(["task", "metric", "value", "baseline", "beats baseline"], rows)


def indent(text: str, prefix: str = "  ") -> str:
    """Every line of `text` with `prefix` before it (a table nested under its heading)."""
    return "\n".join(prefix + line for line in text.splitlines())
