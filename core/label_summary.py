"""One line at the start of a run on what each task's training labels look like.

With imbalanced or sparsely labelled data, what a run learns depends on it:
a binary task with 5% positives, a class with 9 images, a task labelled on a
third of the images. The data line counts images; this says, per task, how
many training images carry its label and how they spread (the classes'
counts, or a regression label's median and range), and notes a class the
training split has that the validation split lacks, where its
recall cannot be measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hydranet.core.interfaces import Task, label_mask
from hydranet.core.metrics import median
from hydranet.core.wording import english_list

#: classes shown by name in a task's counts; the rest are summed up
SHOWN_CLASSES = 8


def label_summary(tasks: Sequence[Task], train_targets: Tensor) -> str:
    """"labels in the training split: age 180 (median 30, 1 to 116); gender 180 (male 94, female 86); ..."."""
    rows = train_targets.shape[0]
    parts = []
    for k, task in enumerate(tasks):
        column = train_targets[:, k]
        labelled = column[label_mask(column)]
        count = f"{labelled.numel()}" if labelled.numel() == rows else f"{labelled.numel()} of {rows}"
        if not labelled.numel():
            parts.append(f"{task.name} none of {rows}")
        elif task.problem == "classification":
            parts.append(f"{task.name} {count} ({_class_counts(task, labelled)})")
        else:
            parts.append(f"{task.name} {count} (median {_number(median(labelled))}, {_number(labelled.min())} to "
                         f"{_number(labelled.max())})")
    return "labels in the training split: " + "; ".join(parts)


def classes_missing_from(tasks: Sequence[Task], train_targets: Tensor, val_targets: Tensor) -> list[str]:
    """Notes on classes the training split has and the validation split lacks (none without one). Not warnings:
    a small class in a small split is common, and the run is right to go on."""
    if not val_targets.shape[0]:
        return []
    notes = []
    for k, task in enumerate(tasks):
        if task.problem != "classification":
            continue
        seen = set(_values(train_targets[:, k])) - set(_values(val_targets[:, k]))
        if seen:
            names = [repr(_class_name(task, value)) for value in sorted(seen)]
            notes.append(f"task '{task.name}': the validation split has no image of "
                         f"{'class' if len(names) == 1 else 'classes'} {english_list(names)}, so how well the model "
                         "tells it apart is not measured there; more images of it, or another data.split_seed, "
                         "would bring it in")
    return notes


def _values(column: Tensor) -> list[int]:
    labelled = column[label_mask(column)]
    return [int(v) for v in torch.unique(labelled).tolist()]


def _class_counts(task: Task, labelled: Tensor) -> str:
    values, counts = torch.unique(labelled, return_counts=True)
    pairs = sorted(zip(values.tolist(), counts.tolist()), key=lambda pair: pair[0])
    shown = [f"{_class_name(task, value)} {count}" for value, count in pairs[:SHOWN_CLASSES]]
    rest = pairs[SHOWN_CLASSES:]
    if rest:
        shown.append(f"{len(rest)} more classes {sum(count for _, count in rest)}")
    return ", ".join(shown)


def _class_name(task: Task, value: float) -> str:
    names = getattr(task, "class_names", None)
    index = int(value)
    return str(names[index]) if isinstance(names, (list, tuple)) and 0 <= index < len(names) else str(index)


def _number(value: Tensor) -> str:
    return f"{float(value):.4g}"
