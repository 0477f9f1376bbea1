"""From a dataset plugin's samples to tensors ready for training.

Labels are parsed once into an (N, K) float32 table (NaN = no label for that
task); images are decoded once (`core/decode.py`); the split is a seeded
permutation; and everything that fits is kept on the training device so a
batch is an index gather.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hydranet.core.decode import Decoded
from hydranet.core.errors import DataError, shown
from hydranet.core.interfaces import Dataset, PluginCall, Sample, Task, kind_of, provenance

SHOW_PROBLEMS = 5  # how many skipped items a report lists before "and N more"


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


PARSE_FIX = ("Fix the task's parse_label: it returns a number, or None when a sample has no usable label, and "
             "never raises; or leave the task out of the spec")


def parse_labels(samples: Sequence[Sample], tasks: Sequence[Task]) -> tuple[Tensor, LabelReport]:
    """(N, K) targets with NaN where a task's label is missing or invalid.

    `parse_label` is plugin code: when it raises, or returns something that is not a number (or None), the
    error names the task, its plugin and the sample, instead of a bare traceback from `float()`.
    """
    table = torch.full((len(samples), len(tasks)), float("nan"), dtype=torch.float32)
    report = LabelReport()
    for k, task in enumerate(tasks):
        labelled = missing = 0
        invalid: list[tuple[str, str, str]] = []
        parse = PluginCall("the parse_label of", provenance(task, "task"), PARSE_FIX, DataError)
        for i, sample in enumerate(samples):
            value = parse(task.parse_label, sample.record, check=_not_a_label, about=lambda: _sample(task, sample))
            if value is not None:
                table[i, k] = float(value)
                labelled += 1
            elif task.label in sample.record:
                raw = sample.record[task.label]
                invalid.append((sample.source, raw, label_problem(task, raw)))
            else:
                missing += 1
        report.labelled[task.name], report.missing[task.name], report.invalid[task.name] = labelled, missing, invalid
        _check_classes(task, table[:, k], samples)
    return table, report


def _not_a_label(value: object) -> str | None:
    """Why what `parse_label` returned is neither a number nor None (a list, a string), or None when it is fine."""
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and hasattr(type(value), "__float__"):
        try:
            float(value)  # type: ignore[arg-type]
            return None
        except (TypeError, ValueError, RuntimeError):  # a tensor of several numbers
            pass
    return f"returned {kind_of(value)}; expected a number, or None when the label is missing"


def _sample(task: Task, sample: Sample) -> str:
    """"sample faces/1.png, age='45'": the input at fault, for an error about a task's labels."""
    raw = sample.record.get(task.label) if isinstance(sample.record, Mapping) else None
    return f"sample {sample.source}" + (f", {task.label}={shown(raw)}" if raw is not None else "")


def _check_classes(task: Task, column: Tensor, samples: Sequence[Sample]) -> None:
    """A classification task with `num_classes` takes class indices 0..num_classes-1 only.

    Checked once, here, where labels are parsed: at loss time an index out of range is an IndexError naming
    nothing on a CPU, and a device-side assert on a GPU.
    """
    classes = getattr(task, "num_classes", None)
    if getattr(task, "problem", None) != "classification" or not isinstance(classes, int) or isinstance(classes, bool):
        return
    bad = (~torch.isnan(column) & ((column < 0) | (column >= classes) | (column != column.floor()))).nonzero().flatten()
    if bad.numel():
        first = int(bad[0])
        more = f"; {bad.numel()} samples have such labels" if bad.numel() > 1 else ""
        raise PluginCall("the parse_label of", provenance(task, "task"),
                         f"Make parse_label return None for a value that is no class, or fix the task's "
                         f"num_classes ({classes}); or leave the task out of the spec", DataError).fault(
            f"returned {float(column[first]):g}, not a class index of its {classes} classes "
            f"(a whole number 0-{classes - 1}){more}", _sample(task, samples[first]))


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
                            f"{_why_all_invalid(task.label, invalid)} ({len(invalid)} of {len(samples)} samples "
                            "have the field). If these labels are right, change the task's parameters (such as "
                            "min/max or class_names) to accept them; otherwise fix the labels.")
        raise DataError(
            f"task '{task.name}' found no valid label in field '{task.label}' of dataset '{dataset}' "
            f"({len(samples)} samples). The samples have fields: {', '.join(fields) or '(none)'}. "
            f"Set the task's `label` to one of them."
        )


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


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Deterministic train/validation indices: a seeded permutation, validation first."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return order[n_val:].sort().values, order[:n_val].sort().values


def describe_problems(what: str, problems: Sequence[tuple[str, str]]) -> list[str]:
    """Lines for a log: a count, then the first few items."""
    if not problems:
        return []
    lines = [f"{len(problems)} {what}:"]
    lines += [f"  {source}: {reason}" if reason else f"  {source}" for source, reason in problems[:SHOW_PROBLEMS]]
    if len(problems) > SHOW_PROBLEMS:
        lines.append(f"  ... and {len(problems) - SHOW_PROBLEMS} more")
    return lines


@dataclass
class PreparedData:
    """Decoded images and label table of every listed sample, with the split.

    `train_index` and `val_index` hold only usable samples (readable, with at
    least one label); rows outside them are never read, so a few bad images
    cost nothing and the (possibly memory-mapped) image tensor is never copied.
    """

    images: Tensor  # uint8 (N, 3, S, S)
    targets: Tensor  # float32 (N, K), NaN = missing
    sources: list[str]
    train_index: Tensor
    val_index: Tensor
    notes: list[str] = field(default_factory=list)
    decoded: Decoded | None = None

    @property
    def usable(self) -> int:
        return self.train_index.numel() + self.val_index.numel()


def prepare_data(
    dataset: Dataset,
    dataset_name: str,
    tasks: Sequence[Task],
    *,
    val_fraction: float,
    split_seed: int,
    strict: bool,
    decode: Callable[[Sequence[str]], Decoded],
) -> PreparedData:
    """List, label, decode and split; skip (or in strict mode, refuse) what is unusable."""
    samples = dataset.samples()
    notes = describe_problems(f"entries of dataset '{dataset_name}' skipped", dataset.problems)
    if strict and dataset.problems:
        raise DataError("\n".join(notes) + "\n(strict mode: fix or remove these, or set data.strict: false)")
    if not samples:
        raise DataError(f"dataset '{dataset_name}' has no usable samples" + ("\n" + "\n".join(notes) if notes else ""))
    targets, report = parse_labels(samples, tasks)
    check_labels(tasks, samples, report, dataset_name)
    for task in tasks:
        invalid = report.invalid[task.name]
        if invalid:
            notes += describe_problems(f"invalid '{task.label}' labels for task '{task.name}' (treated as missing)",
                                       invalid_label_lines(task, invalid))
            if strict:
                raise DataError("\n".join(notes) + "\n(strict mode: fix these labels, or set data.strict: false)")
    unlabelled = torch.isnan(targets).all(dim=1)
    decoded = decode([s.source for s in samples])
    failed = torch.zeros(len(samples), dtype=torch.bool)
    for index, _ in decoded.failures:
        failed[index] = True
    if decoded.failures:
        notes += describe_problems("unreadable images skipped", [(samples[i].source, r) for i, r in decoded.failures])
        if strict:
            raise DataError("\n".join(notes) + "\n(strict mode: remove or replace these files, or set data.strict: false)")
    if int(unlabelled.sum()):
        notes.append(f"{int(unlabelled.sum())} samples have no valid label for any task; skipped")
    keep = (~failed & ~unlabelled).nonzero().flatten()
    if keep.numel() == 0:
        raise DataError(f"dataset '{dataset_name}' has no readable, labelled images\n" + "\n".join(notes))
    train_part, val_part = split_indices(keep.numel(), val_fraction, split_seed)
    return PreparedData(
        images=decoded.images,
        targets=targets,
        sources=[s.source for s in samples],
        train_index=keep[train_part],
        val_index=keep[val_part],
        notes=notes,
        decoded=decoded,
    )
