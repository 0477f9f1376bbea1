"""`hydranet eval`'s answer as text: what the metrics cover, confusion matrices and error distributions.

The command (`cli_model`) reads the checkpoint and evaluates; these turn
the evaluation's report into the tables a person reads. They are apart from
the command so that they read as a whole and are tested without click.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydranet.core.report import format_table, indent


def data_report_text(evaluation: Any) -> str:
    """How many images the metrics cover, then training's data report on what was left out, and why.

    Part of the answer, not progress: metrics on a quietly smaller set of
    images (unreadable files, skipped rows, unlabelled samples) read as
    metrics on all of them.
    """
    coverage, notes = evaluation.coverage, list(evaluation.data_notes)
    skipped = [group for group in evaluation.problems if group.items and group.outcome == "skipped"]
    heading = f"{skipped[0].heading()}:" if len(skipped) == 1 else None
    if heading in notes and coverage.endswith(heading[:-1]):
        # the coverage line ends with what was left out ("...: 1 entry of dataset 'x' skipped"), and the report's
        # list of them would start by saying it again: the list follows the line instead
        notes.remove(heading)
        coverage += ":"
    text = "\n".join(notes)
    return coverage + ("\n" + indent(text) if text else "")


def confusion_text(task: str, report: Mapping[str, Any]) -> str:
    """A confusion matrix with class names, and each true class's recall (the diagonal's share of its row);
    for a task no matrix fits (`evaluation.no_confusion`), the note that says why."""
    names, matrix = report["classes"], report["confusion_matrix"]
    if matrix is None:
        return report["note"]
    total = sum(map(sum, matrix))
    rows = []
    for name, counts in zip(names, matrix):
        recall = counts[names.index(name)] / sum(counts) if sum(counts) else float("nan")
        rows.append([name, *counts, sum(counts), recall])
    table = format_table(["true \\ predicted", *names, "total", "recall"], rows)
    header = f"{task}: confusion matrix, {total} labelled images (rows: true class, columns: predicted class)"
    warning = f"\n  warning: {report['warning']}" if report.get("warning") else ""  # the model outputs NaN/inf
    return header + warning + "\n" + indent(table)


def distribution_text(task: str, report: Mapping[str, Any], width: int = 30) -> str:
    """The error summary on two lines, then the histogram drawn with bars."""
    unit = report.get("unit") or ""
    if not report.get("count"):
        return f"{task}: no labelled images, no error distribution"
    quantiles = "  ".join(f"{k} {v:.2f}" for k, v in report["abs_error_quantiles"].items())
    lines = [
        f"{task}: error distribution (predicted - true{', in ' + unit if unit else ''}), "
        f"{report['count']} labelled images",
        *([f"  warning: {report['warning']}"] if report.get("warning") else []),
        f"  bias (mean) {report['bias']:+.2f}  median {report['median']:+.2f}  MAE {report['mae']:.2f}  "
        f"RMSE {report['rmse']:.2f}",
        f"  |error| quantiles: {quantiles}",
    ]
    edges, counts = report["histogram"]["edges"], report["histogram"]["counts"]
    most = max(counts) or 1
    labels = [f"[{lo:+.1f}, {hi:+.1f})" for lo, hi in zip(edges, edges[1:])]
    pad = max(map(len, labels))
    for label, count in zip(labels, counts):
        lines.append(f"  {label.ljust(pad)}  {'#' * round(width * count / most):<{width}}  {count}")
    return "\n".join(lines)
