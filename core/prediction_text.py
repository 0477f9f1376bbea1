"""`hydranet predict`'s answer as text: a table, a CSV, or why nothing could be read.

The command (`cli_model`) finds the files and runs the model; these write
its rows (`{file, task: prediction, ...}` or `{file, error}`) for a person or
a spreadsheet, apart from the command so that they are tested without click.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from hydranet.core.report import format_table
from hydranet.core.values import is_number
from hydranet.core.wording import plural


def nothing_readable(rows: Sequence[Mapping[str, Any]], out_file: str | None, shown: int = 5) -> str:
    """Why predict made no predictions: the first files with their reasons, and the way out.

    A run in which every file failed (a spec file passed by mistake, a folder
    of RAW photos) must not exit 0, and must not replace an --out file of
    earlier predictions with a file of errors.
    """
    from hydranet.core.image_input import IMAGE_SUFFIXES

    lines = [f"no image could be read ({plural(len(rows), 'file')} tried):"]
    lines += [f"  {row['file']}: {row['error']}" for row in rows[:shown]]
    if len(rows) > shown:
        lines.append(f"  ... and {len(rows) - shown} more")
    kept = f"{out_file} was not written. " if out_file else ""
    lines.append(f"{kept}Pass image files ({', '.join(IMAGE_SUFFIXES)}) or folders of them.")
    return "\n".join(lines)


def predictions_csv(rows: Sequence[Mapping[str, Any]], tasks: Sequence[Any]) -> str:
    """One line per image: file, per task `<task>` (and `<task>_probability` for classification), error.

    `<task>_probability` is that of the class in `<task>`, as the table shows it: for a binary task it is not
    P(class 1) on the rows predicted class 0 (there P(class 1) is 1 minus it). The columns stay as they are:
    spreadsheets read them by name; `--json` gives every class's probability.
    """
    columns = ["file"]
    for task in tasks:
        columns += [task.name, f"{task.name}_probability"] if task.problem == "classification" else [task.name]
    columns.append("error")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        line = {"file": row["file"], "error": row.get("error", "")}
        for task in tasks:
            line.update(_csv_cells(task.name, row.get(task.name)))
        writer.writerow(line)
    return buffer.getvalue()


def _csv_cells(name: str, prediction: Mapping[str, Any] | None) -> dict[str, Any]:
    if prediction is None:
        return {}
    if "value" in prediction:
        return {name: prediction["value"]}
    if "class" in prediction:
        return {name: prediction["class"], f"{name}_probability": prediction.get("probability", "")}
    return {name: json.dumps(prediction)}  # a plugin task with its own decoded shape


def predictions_table(rows: Sequence[Mapping[str, Any]], task_names: Sequence[str]) -> str:
    """file | one column per task | error (only when some image could not be read)."""
    errors = any("error" in row for row in rows)
    headers = ["file", *task_names, *(["error"] if errors else [])]
    body = [[row["file"], *(_readable(row.get(n)) for n in task_names), *([row.get("error", "")] if errors else [])]
            for row in rows]
    return format_table(headers, body)


def _readable(prediction: Mapping[str, Any] | None) -> str:
    if prediction is None:
        return "-"
    if "value" in prediction:
        unit = prediction.get("unit") or ""
        value = prediction["value"]
        number = is_number(value)
        return f"{value:.1f} {unit}".strip() if number else f"{value} {unit}".strip()
    if "class" in prediction:
        probability = prediction.get("probability")
        if is_number(probability):
            return f"{prediction['class']} ({probability:.2f})"
        return str(prediction["class"])  # a plugin's decode need not give a probability
    return json.dumps(prediction, default=str)
