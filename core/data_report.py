"""The data report: what is wrong with a run's data, worded for the person who has to fix it.

`core/data.py` prepares the data and hands each kind of problem it meets (bad
entries from the dataset plugin, invalid labels per task, unreadable images)
here as a `ProblemGroup`; this module words them: the log lines with their
first few items, the full list under $HYDRANET_CACHE/data-reports, the one
strict-mode error, the one error naming every task that has no valid label, and the warning
when so many of a task's labels are invalid that data and task must disagree.
Kept apart so that preparing the data reads as the steps it takes, and the
wording can change without touching them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydranet.core.atomic import atomic_write_text
from hydranet.core.errors import DataError, closest_name
from hydranet.core.interfaces import Dataset, Sample, Task
from hydranet.core.paths import REPORTS_CACHE, cache_dir, printable
from hydranet.core.values import parse_number, reads_as_float
from hydranet.core.wording import english_list, plural

SHOW_PROBLEMS = 5  # how many skipped items a report lists before "and N more"
#: A task with at least this share of its labels invalid gets a warning of its own: the data and the task
#: disagree on how labels are written (gender=F for a task that takes 0/1 or male/female), not a few typos.
INVALID_SHARE_WARNING = 0.2


@dataclass
class LabelReport:
    """Per task: how many samples have a valid label, lack the field, or hold an invalid value.

    Each invalid value is kept as (sample source, raw value, why it is no label; "" when the task cannot say).
    For a classification task, `read` counts each distinct valid value (stripped) with the class it was read
    as: how the report tells a column of class names from one that mixes names and indices.
    """

    labelled: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    read: dict[str, Counter[tuple[str, float]]] = field(default_factory=dict)


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


def sample_where(sample: Sample) -> str:
    """"labels.csv:12 (faces/1.png)" where the dataset says which record a sample came from, else its source.

    Someone fixing an invalid label edits the CSV line, not the image, and a skipped row is already named by its
    line; both are named so that the image can still be found. `getattr`: a plugin's dataset may return objects
    of its own with only `source` and `record`, which has always worked.
    """
    origin = getattr(sample, "origin", None)
    return f"{origin} ({sample.source})" if origin else sample.source


def check_labels(tasks: Sequence[Task], samples: Sequence[Sample], report: LabelReport, dataset: str) -> None:
    """Fail when some task has no label at all, naming every such task in one error.

    One error for all of them: a run that stopped at the first would show the
    next only after that one is fixed, one run per broken task.
    """
    fields = sorted({key for s in samples[:1000] for key in s.record})
    reasons = [reason for task in tasks if (reason := _cannot_train(task, samples, report, dataset, fields))]
    if len(reasons) == 1:
        raise DataError(reasons[0])
    if reasons:
        raise DataError(f"{len(reasons)} tasks found no valid label in dataset '{dataset}', so none of them can "
                        "train; fix each of them (or leave it out of the spec) before the next run:\n"
                        + "\n".join(f"  - {reason}" for reason in reasons))


def _cannot_train(task: Task, samples: Sequence[Sample], report: LabelReport, dataset: str,
                  fields: Sequence[str]) -> str | None:
    """Why `task` has no valid label and what to do, or None when it has one.

    When no sample has the field, the `label` names the wrong field: list the
    fields there are. When samples have it but no value is valid, the field is
    right and the task's parameters (min/max, class_names) or the data are
    wrong: say why the values fail, and the fix for the kind of task (the
    class_names to paste, for words), instead of suggesting another field.
    """
    if report.labelled[task.name]:
        return None
    invalid = report.invalid[task.name]
    if invalid:
        return (f"task '{task.name}' found no valid label in dataset '{dataset}': "
                f"{_why_all_invalid(task.label, invalid)} ({len(invalid)} of "
                f"{plural(len(samples), 'sample')} {'has' if len(invalid) == 1 else 'have'} the field). "
                f"{_likely_fix(task, invalid, report.read.get(task.name))}")
    markers = [s.record[task.label] for s in samples if task.label in s.record]
    if markers:  # the field is there, but every value says "no value" (NA, nan, ...)
        return (f"task '{task.name}' found no valid label in dataset '{dataset}': every value of "
                f"'{task.label}' ({len(markers)} of {plural(len(samples), 'sample')}) marks a missing "
                f"value, e.g. {markers[0]!r}. Fill in the labels, or leave the task out of the spec.")
    return (f"task '{task.name}' found no valid label in field '{task.label}' of dataset '{dataset}' "
            f"({plural(len(samples), 'sample')}).{_did_you_mean(task.label, fields)} The samples have fields: "
            f"{', '.join(fields) or '(none)'}. Set the task's `label` to one of them.")


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
            f"{_stands_for(task, [raw for raw, _ in counts[:3]])} "
            f"{_likely_fix(task, invalid, report.read.get(task.name))}")
    return warnings


def mixed_reading_warnings(tasks: Sequence[Task], report: LabelReport) -> list[str]:
    """A warning for each classification task whose column holds both class names and class indices.

    Each value alone is read right, but together they say the column was
    written by two hands (or two exports): `yes`, `no`, `1`, `0` with
    class_names [yes, no] reads 1 as 'no', by position, which is rarely what
    the one who wrote 1 meant. Said once per task, with how each index reads.
    """
    warnings = []
    for task in tasks:
        names = getattr(task, "class_names", None)
        read = report.read.get(task.name)
        if not read or not isinstance(names, (list, tuple)):
            continue
        spelled = {str(name).strip().lower() for name in names}
        by_name: Counter[str] = Counter()
        by_index: Counter[tuple[str, float]] = Counter()
        for (raw, value), count in read.items():
            named = names[int(value)] if 0 <= value < len(names) else ""
            if raw.lower() in spelled or _same_number(raw, str(named)):  # '2.0' for the class named 2 is its name
                by_name[raw] += count
            elif reads_as_float(raw):
                by_index[raw, value] += count
        if not by_name or not by_index:
            continue
        indices = [raw for (raw, _), _ in by_index.most_common()]
        readings = [f"{raw} as {names[int(value)]!r}" for (raw, value), _ in by_index.most_common(3)
                    if 0 <= value < len(names)]
        warnings.append(
            f"WARNING: task '{task.name}': its '{task.label}' column holds both class names "
            f"({', '.join(raw for raw, _ in by_name.most_common(5))}) and class indices ({', '.join(indices[:5])}); "
            f"an index is a position in class_names ({', '.join(map(str, names))}), so it reads "
            f"{english_list(readings)}. If that is not what the data means, write the column with class names only.")
    return warnings


def _same_number(raw: str, name: str) -> bool:
    """Whether `raw` and a class name read as one number ('2.0' and '2'): then `raw` names that class."""
    number = parse_number(raw)
    return number is not None and number == parse_number(name)


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


#: How many distinct values a suggested `class_names: [...]` lists at most.
SUGGEST_NAMES = 20


def _likely_fix(task: Task, invalid: Sequence[tuple[str, str, str]] = (),
                read: Counter[tuple[str, float]] | None = None) -> str:
    """What to change when many (or all) of a task's labels are invalid, by the kind of task.

    For a classification task whose invalid values are words, the fix is its
    class_names, so the sentence gives them ready to paste (`_suggest_names`).
    """
    problem = getattr(task, "problem", None)
    if problem == "classification":
        suggestion = _suggest_names(task, invalid, read or Counter())
        if suggestion:
            return suggestion
        names = getattr(task, "class_names", None)
        known = f" (now {', '.join(map(str, names))})" if isinstance(names, (list, tuple)) and names else ""
        return (f"If these values are right, give the task class_names spelled as in the data, in label order"
                f"{known}, or rewrite them in the data as class indices or class names it accepts; "
                "otherwise fix the labels.")
    if problem == "regression":
        return ("If these values are right, change the task's parameters (such as min/max) to accept them, "
                "or rewrite them in the data as plain numbers; otherwise fix the labels.")
    return "If these values are right, change the task's parameters to accept them; otherwise fix the labels."


def _suggest_names(task: Task, invalid: Sequence[tuple[str, str, str]], read: Counter[tuple[str, float]]) -> str:
    """"If these are its classes, give the task `class_names: [cat, dog, bird]` ...", or "" for no words.

    The names it reads now come first, where some value was read by name, so that no class
    changes its index; then every word among the invalid values, commonest first.
    """
    words = Counter(raw.strip() for _, raw, _ in invalid if raw.strip() and not reads_as_float(raw.strip()))
    if not words:
        return ""
    names = [str(name) for name in getattr(task, "class_names", None) or ()]
    spelled = {name.strip().lower() for name in names}
    kept = names if any(raw.lower() in spelled for raw, _ in read) else []
    seen = {name.lower() for name in kept}
    new = [word for word, _ in words.most_common() if word.lower() not in seen and not seen.add(word.lower())]
    listed = [*kept, *new]
    more = f" ({len(listed) - SUGGEST_NAMES} more values are left out)" if len(listed) > SUGGEST_NAMES else ""
    classes = getattr(task, "num_classes", None)
    takes_count = hasattr(getattr(task, "params", None), "num_classes")  # a multiclass task's; binary has 2
    count = (f" That is {plural(len(listed), 'name')} for its {classes} classes: keep one per class and fix the "
             "other values in the data" + (", or change num_classes" if takes_count else "") + "."
             if isinstance(classes, int) and classes != len(listed) else "")
    pasted = ", ".join(map(_yaml_word, listed[:SUGGEST_NAMES]))
    return (f"If these values are its classes, give the task `class_names: [{pasted}]`{more}, in label order "
            f"(a label is read by class name, case-insensitively).{count} Otherwise fix the labels.")


def _yaml_word(name: str) -> str:
    """A class name as written in a YAML flow list: bare where YAML 1.2 reads it as that text, else quoted."""
    if re.fullmatch(r"[A-Za-z_][\w.-]*( [\w.-]+)*", name) and name.lower() not in {"true", "false", "null"}:
        return name
    return json.dumps(name, ensure_ascii=False)


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
