"""From a dataset plugin's samples to tensors ready for training.

Labels are parsed once into an (N, K) float32 table (NaN = no label for that
task); images are decoded once (`core/decode.py`); the split is a seeded
permutation; and everything that fits is kept on the training device so a
batch is an index gather. What goes wrong on the way (bad entries, invalid
labels, unreadable images) is worded by `core/data_report.py`; this module
only decides what is skipped and when the run stops.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hydranet.core.data_report import (
    SHOW_PROBLEMS,
    LabelReport,
    ProblemGroup,
    check_labels,
    full_report_path,
    invalid_label_group,
    invalid_share_warnings,
    label_problem,
    mixed_reading_warnings,
    sample_where,
    strict_error,
    write_full_report,
)
from hydranet.core.decode import Decoded
from hydranet.core.errors import DataError, shown
from hydranet.core.interfaces import Dataset, Sample, Task, label_mask
from hydranet.core.plugin_calls import PluginCall, kind_of, provenance
from hydranet.core.values import finite_as_float32, is_whole_number
from hydranet.core.wording import plural

#: Cells that spreadsheets, pandas and R write for "no value" (`df.to_csv` writes NaN as "" or "nan", R writes
#: NA, Excel #N/A): a missing label, not an invalid one that the report lists. A task that takes one of them
#: as a class name still gets it, since `parse_label` is asked first.
MISSING_MARKERS = frozenset({"na", "n/a", "nan", "null", "none", "#n/a", "<na>"})

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
        # How a classification task read its values, for the report's check of a column that mixes class names
        # and class indices; not for regression, whose distinct values may be as many as its samples.
        read = Counter[tuple[str, float]]() if getattr(task, "problem", None) == "classification" else None
        parse = PluginCall("the parse_label of", provenance(task, "task"), PARSE_FIX, DataError)
        # A Python list, turned into the column at once: setting tensor elements one by one costs microseconds
        # each, a third of a warm start's data time on UTKFace's 23,708 images and three tasks.
        column = [math.nan] * len(samples)
        for i, sample in enumerate(samples):
            value = parse(task.parse_label, sample.record, check=_not_a_label, about=lambda: _sample(task, sample))
            if value is not None and ((number := _as_float(value)) is None or _beyond_float32(number)):
                # A plugin's parse_label read 1e39: inf as a float32 label, so invalid, as the built-in kinds
                # read such a cell (`parse_number`); once torch's "cannot be converted to type float" error.
                raw = sample.record.get(task.label, value) if isinstance(sample.record, Mapping) else value
                shown = "an integer beyond ±1.8e308" if number is None else f"{number:g}"
                invalid.append((sample_where(sample), raw if isinstance(raw, str) else shown,
                                f"parse_label returned {shown}, not a finite number as float32 (beyond ±3.4e38)"))
            elif value is not None:
                column[i] = number
                labelled += 1
                if read is not None:
                    read[str(sample.record.get(task.label, "")).strip(), number] += 1
            elif task.label in sample.record and not is_missing_marker(sample.record[task.label]):
                raw = sample.record[task.label]
                invalid.append((sample_where(sample), raw, label_problem(task, raw)))
            else:
                missing += 1
        report.labelled[task.name], report.missing[task.name], report.invalid[task.name] = labelled, missing, invalid
        report.read[task.name] = read or Counter()
        table[:, k] = torch.tensor(column, dtype=torch.float32)
        _check_classes(task, table[:, k], samples)
    return table, report


def _as_float(value: object) -> float | None:
    """float(value), or None for an integer too large for any float (10**400, where float() raises OverflowError):
    a number, but beyond float32 like 1e39, so an invalid label rather than a crash."""
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        return None


def _beyond_float32(number: float) -> bool:
    """A finite number too large for float32 (1e39): inf as a label. NaN and inf themselves keep their meaning
    (NaN is a missing label, inf a value the loss reports)."""
    return math.isfinite(number) and not finite_as_float32(number)


def is_missing_marker(raw: object) -> bool:
    """Whether a raw field says "no value" the way exporters write it (NA, nan, N/A, null, ...)."""
    return isinstance(raw, str) and raw.strip().lower() in MISSING_MARKERS


def _not_a_label(value: object) -> str | None:
    """Why what `parse_label` returned is neither a number nor None (a list, a string), or None when it is fine."""
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and hasattr(type(value), "__float__"):
        try:
            float(value)  # type: ignore[arg-type]
            return None
        except OverflowError:  # an integer beyond any float (10**400): a number, `parse_labels` says it is too large
            return None
        except (TypeError, ValueError, RuntimeError):  # a tensor of several numbers
            pass
    return f"returned {kind_of(value)}; expected a number, or None when the label is missing"


def _sample(task: Task, sample: Sample) -> str:
    """"sample labels.csv:3 (faces/1.png), age='45'": the input at fault, for an error about a task's labels."""
    raw = sample.record.get(task.label) if isinstance(sample.record, Mapping) else None
    return f"sample {sample_where(sample)}" + (f", {task.label}={shown(raw)}" if raw is not None else "")


def _check_classes(task: Task, column: Tensor, samples: Sequence[Sample]) -> None:
    """A classification task with `num_classes` takes class indices 0..num_classes-1 only.

    Checked once, here, where labels are parsed: at loss time an index out of range is an IndexError naming
    nothing on a CPU, and a device-side assert on a GPU.
    """
    classes = getattr(task, "num_classes", None)
    if getattr(task, "problem", None) != "classification" or not is_whole_number(classes):
        return
    bad = (label_mask(column) & ((column < 0) | (column >= classes) | (column != column.floor()))).nonzero().flatten()
    if bad.numel():
        first = int(bad[0])
        more = f"; {bad.numel()} samples have such labels" if bad.numel() > 1 else ""
        raise PluginCall("the parse_label of", provenance(task, "task"),
                         f"Make parse_label return None for a value that is no class, or fix the task's "
                         f"num_classes ({classes}); or leave the task out of the spec", DataError).fault(
            f"returned {float(column[first]):g}, not a class index of its {classes} classes "
            f"(a whole number 0-{classes - 1}){more}", _sample(task, samples[first]))


def _unlabelled(samples: Sequence[Sample], unlabelled: Tensor) -> ProblemGroup:
    """The readable samples that no task has a valid label for, listed like a problem so they can be found.

    Not one that strict mode stops for: a sample may lack every label, as a
    missing label is normal. Unreadable ones are left out; they are listed as such.
    Each is named as an invalid label is (`sample_where`): its CSV line, where
    the dataset knows it, is where its labels are filled in.
    """
    return ProblemGroup("sample with no valid label for any task", "samples with no valid label for any task", "",
                        "skipped", [(sample_where(samples[int(i)]), "") for i in unlabelled.nonzero().flatten()])


def split_indices(n: int, val_fraction: float, seed: int, test_fraction: float = 0.0) -> tuple[Tensor, ...]:
    """Deterministic train/validation indices, and test indices when `test_fraction` > 0: one seeded permutation,
    validation first, then test, the rest training.

    With `test_fraction` 0 it returns (train, val) exactly as before the test split existed; with a test split
    the validation images are the same ones, and the test images come out of what would have been training.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    if test_fraction <= 0:
        return order[n_val:].sort().values, order[:n_val].sort().values
    n_test = int(round(n * test_fraction))
    room = n - n_val - 1  # training keeps at least one image
    n_test = max(0, min(max(n_test, 1), room))
    held = n_val + n_test
    return order[held:].sort().values, order[:n_val].sort().values, order[n_val:held].sort().values


#: added to data.split_seed for the draws that give the test split a label of each task (not those of validation)
TEST_SEED_OFFSET = 7919


@dataclass
class PreparedData:
    """Decoded images and label table of every listed sample, with the split.

    `train_index`, `val_index` and `test_index` hold only usable samples
    (readable, with at least one label); rows outside them are never read, so a
    few bad images cost nothing and the (possibly memory-mapped) image tensor is
    never copied. `test_index` is empty unless `data.test_fraction` > 0: images
    held out from training and from choosing the best epoch, scored once at the end.
    """

    images: Tensor  # uint8 (N, 3, S, S)
    targets: Tensor  # float32 (N, K), NaN = missing
    sources: list[str]
    train_index: Tensor
    val_index: Tensor
    notes: list[str] = field(default_factory=list)
    decoded: Decoded | None = None
    #: every kind of problem met (bad entries, invalid labels, unreadable and unlabelled images), empty ones too:
    #: what `hydranet eval` reports next to its metrics, counted and listed as training lists them in `notes`
    problems: list[ProblemGroup] = field(default_factory=list)
    test_index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    @property
    def usable(self) -> int:
        return self.train_index.numel() + self.val_index.numel() + self.test_index.numel()


def prepare_data(
    dataset: Dataset,
    dataset_name: str,
    tasks: Sequence[Task],
    *,
    val_fraction: float,
    split_seed: int,
    strict: bool,
    decode: Callable[[Sequence[str]], Decoded],
    test_fraction: float = 0.0,
) -> PreparedData:
    """List, label, decode and split; skip (or in strict mode, refuse) what is unusable.

    In strict mode every kind of problem is gathered first (bad entries,
    invalid labels of every task, unreadable images) and refused in one error,
    so one run shows everything to fix.
    """
    samples = dataset.samples()
    entries = ProblemGroup("entry", "entries", f"of dataset '{dataset_name}'", "skipped", list(dataset.problems))
    report_path = full_report_path(dataset, dataset_name)
    if not samples:
        lines = entries.lines(strict, write_full_report(report_path, [entries], strict) if entries.items else None)
        raise DataError(f"dataset '{dataset_name}' has no usable samples" + "".join("\n" + line for line in lines))
    targets, report = parse_labels(samples, tasks)
    check_labels(tasks, samples, report, dataset_name)
    labels = [invalid_label_group(task, report.invalid[task.name]) for task in tasks]
    warnings = [*invalid_share_warnings(tasks, report), *mixed_reading_warnings(tasks, report)]
    unlabelled = torch.isnan(targets).all(dim=1)
    sources = [s.source for s in samples]
    decoded = decode(sources)
    failed = torch.zeros(len(samples), dtype=torch.bool)
    for index, _ in decoded.failures:
        failed[index] = True
    unreadable = ProblemGroup("unreadable image", "unreadable images", "", "skipped",
                              [(sample_where(samples[i]), r) for i, r in decoded.failures])
    groups = [entries, *labels, unreadable]  # what strict mode stops for
    problems = [*groups, _unlabelled(samples, unlabelled & ~failed)]
    full_list = None
    if any(len(group.items) > SHOW_PROBLEMS for group in problems):
        full_list = write_full_report(report_path, problems, strict)
    if strict and any(group.items for group in groups):
        raise strict_error(dataset_name, groups, warnings, full_list)
    notes = [*dataset_notes(dataset), *decoded.warnings]  # decode's: the cache could not be written, when it could not
    notes += [line for group in problems for line in group.lines(full_list=full_list)]
    notes += warnings
    if not (~failed & ~unlabelled).any():
        raise DataError(f"dataset '{dataset_name}' has no readable, labelled images\n" + "\n".join(notes))
    drawn = split_indices(int((~failed).sum()), val_fraction, split_seed, test_fraction)
    parts = _split_labelled((~failed).nonzero().flatten(), drawn, unlabelled, split_seed, sources, notes)
    train_index, val_index = parts[0], parts[1]
    if drawn[1].numel():  # validation was asked for (and the data is big enough to hold some)
        train_index, val_index = _validate_every_task(tasks, targets, sources, train_index, val_index,
                                                      split_seed, notes)
    test_index = torch.empty(0, dtype=torch.long)
    if len(parts) == 3 and drawn[2].numel():
        train_index, test_index = _validate_every_task(tasks, targets, sources, train_index, parts[2],
                                                       split_seed + TEST_SEED_OFFSET, notes, held_out="test")
    return PreparedData(
        images=decoded.images,
        targets=targets,
        sources=sources,
        train_index=train_index,
        val_index=val_index,
        notes=notes,
        decoded=decoded,
        problems=problems,
        test_index=test_index,
    )


def dataset_notes(dataset: Dataset) -> list[str]:
    """What the dataset's listing noted that skipped nothing (e.g. a CSV name matched in another Unicode form).

    `Dataset.notes` keeps them; a plugin's dataset that does not derive from `Dataset`, or that set `notes` to
    something other than a list, has none.
    """
    notes = getattr(dataset, "notes", None)
    return [note for note in notes if isinstance(note, str)] if isinstance(notes, list) else []


def _split_labelled(readable: Tensor, drawn: Sequence[Tensor], unlabelled: Tensor, seed: int,
                    sources: Sequence[str], notes: list[str]) -> list[Tensor]:
    """The parts `drawn` (`split_indices` of the `readable` samples, whatever their labels), as sample indices,
    each without the samples that no task of the spec has a label for.

    The split is drawn before those are dropped so that an image lands in the
    same part whatever tasks the spec names: a single-task baseline, whose
    task is missing on some images, then validates on the multi-task run's
    validation images (those it has a label for), and `hydranet compare`
    compares scores on the same images. Drawn over the labelled samples only,
    each task set shuffled the images its own way. Where every sample has a
    label, this is that split exactly, as it always was.

    Training keeps an image, as `split_indices` makes sure before the drop:
    when every image drawn for it is unlabelled, one labelled held-out image
    (drawn with the split's seed) is moved there, and `notes` says so. A
    held-out part left empty is refilled by `_validate_every_task`.
    """
    parts = [readable[part] for part in drawn]
    parts = [index[~unlabelled[index]] for index in parts]
    if parts[0].numel() == 0:
        held = torch.cat(parts[1:]).sort().values  # not empty: some readable sample has a label
        pick = held[torch.randint(held.numel(), (1,), generator=torch.Generator().manual_seed(seed))]
        where = next(name for name, part in zip(("validation", "test"), parts[1:]) if (part == pick).any())
        parts = [torch.cat([parts[0], pick]), *(part[part != pick] for part in parts[1:])]
        notes.append(f"none of the images drawn for training has a label for the spec's tasks: moved "
                     f"{sources[int(pick)]} there from the {where} images, so that training has one")
    return parts


def _validate_every_task(tasks: Sequence[Task], targets: Tensor, sources: Sequence[str], train_index: Tensor,
                         held_index: Tensor, seed: int, notes: list[str],
                         held_out: str = "validation") -> tuple[Tensor, Tensor]:
    """The split, with one labelled training sample moved to the held-out images (`held_index`: validation, or
    test) for each task that has none there.

    A task labelled on few images (a new CSV column filled in for 3 of 300)
    can have every label land in training. Its validation loss is then not a
    number, so no epoch could be the best, and its metrics would be blank.
    The sample moved is drawn with the split's seed, so the split stays the
    same on every run over the same data. Each move, or a task left without a
    validation label, is added to `notes`. The test split (`held_out`
    "test") gets the same, from what training has left. A held-out part that
    was drawn but holds no labelled image (its images had no label for the
    spec's tasks) gets one the same way, so it is not lost to the split.
    Called only for a part that was drawn: `data.val_fraction` 0 has none.
    """
    for k, task in enumerate(tasks):
        if label_mask(targets[held_index, k]).any():
            continue
        labelled = train_index[label_mask(targets[train_index, k])]
        if labelled.numel() < 2:  # moving its only label would leave training without one
            notes.append(f"task '{task.name}' has no label among the {held_out} images and "
                         f"{plural(labelled.numel(), 'label')} in training: its {held_out} metrics cannot be measured; "
                         "label more images for it")
            continue
        pick = labelled[torch.randint(labelled.numel(), (1,), generator=torch.Generator().manual_seed(seed + k))]
        train_index = train_index[train_index != pick]
        held_index = torch.cat([held_index, pick]).sort().values
        notes.append(f"task '{task.name}' had none of its {labelled.numel()} labels among the {held_out} images: "
                     f"moved {sources[int(pick)]} there from training, so that the task is measured")
    return train_index, held_index
