"""The data report: what is wrong with a run's data, worded for the person who has to fix it.

`core/data.py` prepares the data and hands each kind of problem it meets (bad
entries from the dataset plugin, invalid labels per task, unreadable images)
here as a `ProblemGroup`; this module words them: the log lines with their
first few items, the full list under $HYDRANET_CACHE/data-reports, the one
strict-mode error, the error when a task has no valid label, and the warning
when so many of a task's labels are invalid that data and task must disagree.
Kept apart so that preparing the data reads as the steps it takes, and the
wording can change without touching them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydranet.core.atomic import atomic_write_text
from hydranet.core.errors import DataError, closest_name
from hydranet.core.interfaces import Dataset, Sample, Task
from hydranet.core.paths import REPORTS_CACHE, cache_dir, printable
from hydranet.core.wording import english_list, plural

SHOW_PROBLEMS = 5  # how many skipped items a report lists before "and N more"
#: A task with at least this share of its labels invalid gets a warning of its own: the data and the task
#: disagree on how labels are written (gender=F for a task that takes 0/1 or male/female), not a few typos.
INVALID_SHARE_WARNING = 0.2


@dataclass
class LabelReport:
    """Per task: how many samples have a valid label, lack the field, or hold an invalid value.

    Each invalid value is kept as (sample source, raw value, why it is no label; "" when the task cannot say).
    """

    labelled: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)


def label_problem(task: Task, raw: str) -> str:
    """Why `raw` is not a valid label for `task`, or "" when the task does not say.

    `label_problem(raw)` is an optional task method (the built-in kinds have
    it): without a reason, a user who sees `age='200'` listed as invalid has to
    guess whether the task wanted a number, a range or a class name.
    """
    explain = getattr(task, "label_problem", None)
    return str(explain(raw) or "") if callable(explain) else ""


def invalid_label_lines(task: Task, invalid: Sequence[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """(source, "label='raw': why") pairs for `describe_problems`."""
    return [(source, f"{task.label}={raw!r}" + (f": {why}" if why else "")) for source, raw, why in invalid]


def check_labels(tasks: Sequence[Task], samples: Sequence[Sample], report: LabelReport, dataset: str) -> None:
    """Fail when a task has no label at all.

    When no sample has the field, the `label` names the wrong field: list the
    fields there are. When samples have it but no value is valid, the field is
    right and the task's parameters (min/max, class_names) or the data are
    wrong: say why the values fail instead of suggesting another field.
    """
    fields = sorted({key for s in samples[:1000] for key in s.record})
    for task in tasks:
        if report.labelled[task.name]:
            continue
        invalid = report.invalid[task.name]
        if invalid:
            raise DataError(f"task '{task.name}' found no valid label in dataset '{dataset}': "
                            f"{_why_all_invalid(task.label, invalid)} ({len(invalid)} of "
                            f"{plural(len(samples), 'sample')} {'has' if len(invalid) == 1 else 'have'} the field). "
                            "If these labels are right, change the task's parameters (such as "
                            "min/max or class_names) to accept them; otherwise fix the labels.")
        markers = [s.record[task.label] for s in samples if task.label in s.record]
        if markers:  # the field is there, but every value says "no value" (NA, nan, ...)
            raise DataError(f"task '{task.name}' found no valid label in dataset '{dataset}': every value of "
                            f"'{task.label}' ({len(markers)} of {plural(len(samples), 'sample')}) marks a missing "
                            f"value, e.g. {markers[0]!r}. Fill in the labels, or leave the task out of the spec.")
        raise DataError(
            f"task '{task.name}' found no valid label in field '{task.label}' of dataset '{dataset}' "
            f"({plural(len(samples), 'sample')}).{_did_you_mean(task.label, fields)} The samples have fields: "
            f"{', '.join(fields) or '(none)'}. Set the task's `label` to one of them."
        )


def _did_you_mean(label: str, fields: Sequence[str]) -> str:
    """" Did you mean 'Age'?": a field spelt like `label` but for case or a typo (a CSV header's `Age`, `gendr`).

    A sentence of its own, so capitalised, unlike `errors.did_you_mean`'s clause; the match is its, a little
    stricter (a wrong field suggested would mislead more than none)."""
    close = closest_name(label, fields, cutoff=0.7)
    return f" Did you mean {close!r}?" if close is not None else ""


def _why_all_invalid(label: str, invalid: Sequence[tuple[str, str, str]]) -> str:
    """`every value of 'age' is outside [150, 200] (min/max), e.g. '20', '21'`, or one example per reason."""
    by_reason: dict[str, list[str]] = {}
    for _, raw, why in invalid:
        examples = by_reason.setdefault(why, [])
        if raw not in examples and len(examples) < 3:
            examples.append(raw)
    if len(by_reason) == 1:
        (why, examples), = by_reason.items()
        listed = ", ".join(map(repr, examples))
        if why:
            return f"every value of '{label}' is {why}, e.g. {listed}"
        return f"no value of '{label}' is valid, e.g. {listed}"
    shown = [f"{examples[0]!r}" + (f" ({why})" if why else "") for why, examples in list(by_reason.items())[:3]]
    return f"no value of '{label}' is valid, e.g. {', '.join(shown)}"


def describe_problems(heading: str, problems: Sequence[tuple[str, str]], full_list: Path | None = None) -> list[str]:
    """Lines for a log: the heading (which carries the count), then the first few items.

    When items are left out and `full_list` is given, the "and N more" line says where every one is.
    """
    if not problems:
        return []
    lines = [f"{heading}:"]
    lines += [_item_line(source, reason) for source, reason in problems[:SHOW_PROBLEMS]]
    if len(problems) > SHOW_PROBLEMS:
        where = f" (all {len(problems)} are listed in {full_list})" if full_list else ""
        lines.append(f"  ... and {len(problems) - SHOW_PROBLEMS} more{where}")
    return lines


def _item_line(source: str, reason: str) -> str:
    """"  faces/1.png: cannot identify image file", as the log and the full list both write an item.

    A file name that is not UTF-8 is written with its odd bytes escaped (`caf\\xe9.jpg`): the line must print
    and be written as UTF-8 text, and the escape still says which file it is.
    """
    return f"  {printable(source)}: {printable(reason)}" if reason else f"  {printable(source)}"


@dataclass
class ProblemGroup:
    """One kind of data problem: what it costs (`outcome`, e.g. "skipped") and its (where, why) items."""

    what: str  # counted noun phrase in the singular: "unreadable image"
    what_plural: str  # "unreadable images"
    qualifier: str  # after the noun and the outcome: "for task 'age'"; "" for none
    outcome: str  # "skipped" / "treated as missing": what happens to these when the run goes on
    items: list[tuple[str, str]]

    def heading(self, strict: bool = False) -> str:
        """'3 unreadable images skipped', or in strict mode, where the run stops: '... would be skipped'."""
        counted = plural(len(self.items), self.what, self.what_plural)
        outcome = f"would be {self.outcome}" if strict else self.outcome
        qualifier = f" {self.qualifier}" if self.qualifier else ""
        if self.outcome == "skipped":
            return f"{counted}{qualifier} {outcome}"
        return f"{counted}{qualifier} ({outcome})"

    def lines(self, strict: bool = False, full_list: Path | None = None) -> list[str]:
        return describe_problems(self.heading(strict), self.items, full_list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a JSON report (`hydranet eval --json`): every item, not only the first few."""
        return {"problem": self.heading(), "count": len(self.items), "outcome": self.outcome,
                "items": [{"source": printable(source), "reason": printable(reason)} for source, reason in self.items]}


#: How `coverage_line` names the part of the data an evaluation scored (the choices of `hydranet eval --split`).
SPLIT_WORDS = {"val": "the validation split", "train": "the training split", "all": "all splits",
               "test": "the test split"}


def left_out(groups: Sequence[ProblemGroup]) -> int:
    """How many listed images the groups left out (those "skipped"; a label treated as missing leaves none out)."""
    return sum(len(group.items) for group in groups if group.outcome == "skipped")


def coverage_line(evaluated: int, usable: int, split: str, groups: Sequence[ProblemGroup]) -> str:
    """What an evaluation's metrics cover, and what the data lost before it, in one line.

    Training prints its data report before the first epoch; an evaluation
    that printed only metrics would score a subset of the data (unreadable
    images, rows the dataset skipped, samples with no label) without a word.
    The groups are training's own (`PreparedData.problems`), so both say the
    same thing in the same words: "data: 20 images evaluated (the validation
    split of 96 usable images); 4 of the 100 images listed were left out: ...".
    Labels treated as missing leave no image out; the report's lists, printed
    below this line, name them.
    """
    skipped = [group for group in groups if group.items and group.outcome == "skipped"]
    scope = SPLIT_WORDS.get(split, f"the {split!r} split")
    line = f"data: {plural(evaluated, 'image')} evaluated ({scope} of {plural(usable, 'usable image')})"
    left = left_out(groups)
    if left:
        listed = plural(usable + left, "image")
        line += f"; {left} of the {listed} listed {'was' if left == 1 else 'were'} left out: "
        return line + "; ".join(group.heading() for group in skipped)
    return line + "; nothing was left out"


def invalid_label_group(task: Task, invalid: Sequence[tuple[str, str, str]]) -> ProblemGroup:
    return ProblemGroup(f"invalid '{task.label}' label", f"invalid '{task.label}' labels", f"for task '{task.name}'",
                        "treated as missing", invalid_label_lines(task, invalid))


def invalid_share_warnings(tasks: Sequence[Task], report: LabelReport) -> list[str]:
    """A warning for each task with a large share (INVALID_SHARE_WARNING) of its labels invalid.

    A few invalid labels are typos; half of them means the data writes labels
    in a way the task does not take (`gender=F` for a task of 0/1 or
    male/female), and training would go on with that task barely trained. The
    warning names the commonest raw values, what the task takes, and the fix.
    """
    warnings = []
    for task in tasks:
        invalid = report.invalid.get(task.name, [])
        present = report.labelled.get(task.name, 0) + len(invalid)
        if not invalid or len(invalid) < INVALID_SHARE_WARNING * present:
            continue
        counts = Counter(raw for _, raw, _ in invalid).most_common()
        values = ", ".join(f"{raw!r} ×{count}" for raw, count in counts[:3])
        if len(counts) > 3:
            values += f" and {plural(len(counts) - 3, 'other value')}"
        commonest = counts[0][0]
        why = next((why for _, raw, why in invalid if raw == commonest and why), "")
        accepts = f" ({commonest!r}: {why})" if why else ""
        warnings.append(
            f"WARNING: task '{task.name}': {len(invalid) / present:.0%} of its labels are invalid "
            f"({len(invalid)} of {plural(present, 'sample')} with a '{task.label}' value), so they are treated as "
            f"missing and the task trains on the rest only. Commonest invalid values: {values}{accepts}."
            f"{_stands_for(task, [raw for raw, _ in counts[:3]])} {_likely_fix(task)}")
    return warnings


def _stands_for(task: Task, values: Sequence[str]) -> str:
    """" 'F' may stand for class 'female'.": an invalid value that begins exactly one class name."""
    names = getattr(task, "class_names", None)
    if not isinstance(names, (list, tuple)):
        return ""
    guesses = []
    for raw in values:
        matches = [str(name) for name in names if raw.strip() and str(name).lower().startswith(raw.strip().lower())]
        if len(matches) == 1:
            guesses.append(f"{raw!r} may stand for class {matches[0]!r}")
    return f" {english_list(guesses)}." if guesses else ""


def _likely_fix(task: Task) -> str:
    """What to change when most of a task's labels are invalid, by the kind of task."""
    problem = getattr(task, "problem", None)
    if problem == "classification":
        names = getattr(task, "class_names", None)
        known = f" (now {', '.join(map(str, names))})" if isinstance(names, (list, tuple)) and names else ""
        return (f"If these values are right, give the task class_names spelled as in the data, in label order"
                f"{known}, or rewrite them in the data as class indices or class names it accepts; "
                "otherwise fix the labels.")
    if problem == "regression":
        return ("If these values are right, change the task's parameters (such as min/max) to accept them, "
                "or rewrite them in the data as plain numbers; otherwise fix the labels.")
    return "If these values are right, change the task's parameters to accept them; otherwise fix the labels."


def full_report_path(dataset: Dataset, dataset_name: str) -> Path:
    """Where the full list of a dataset's problems is written when a report shows only the first few.

    Not the run folder: a run that stops before training (strict mode) takes
    its folder away again. One file per dataset (its name and root), replaced
    by each run.
    """
    where = f"{dataset_name}\0{getattr(dataset, 'root', '')}\0{getattr(dataset, 'csv', '')}"
    digest = hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()[:12]  # a root not in UTF-8 too
    return cache_dir() / REPORTS_CACHE / f"{dataset_name}-{digest}.txt"


def write_full_report(path: Path, groups: Sequence[ProblemGroup], strict: bool) -> Path | None:
    """Every item of every group to `path`; None (and no pointer in the report) when it cannot be written."""
    lines = []
    for group in groups:
        if group.items:
            lines.append(f"{group.heading(strict)}:")
            lines += [_item_line(source, reason) for source, reason in group.items]
    try:
        return atomic_write_text(path, "\n".join(lines) + "\n")
    except OSError:  # (OutputError too) a cache folder that takes no files: the report keeps its first few
        return None


def strict_error(dataset_name: str, groups: Sequence[ProblemGroup], warnings: Sequence[str],
                 full_list: Path | None) -> DataError:
    """One error listing every kind of problem strict mode found, each with its count and first few items."""
    found = [group for group in groups if group.items]
    total = sum(len(group.items) for group in found)
    kinds = f" of {len(found)} kinds" if len(found) > 1 else ""
    lines = [f"dataset '{dataset_name}' has {plural(total, 'problem')}{kinds}, and data.strict is true:"]
    for group in found:
        lines += group.lines(strict=True, full_list=full_list)
    lines += warnings
    outcomes = english_list(sorted({group.outcome for group in found}), "or")
    lines.append(f"(without strict mode these would be {outcomes}; strict mode stops instead: "
                 "fix or remove them, or set data.strict: false)")
    return DataError("\n".join(lines))
