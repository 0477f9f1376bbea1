"""`Evaluation`: what `TrainedModel.evaluate` answers, and how it shows itself (repr, JSON).

Kept apart from inference.py, which computes it: this is the result a
notebook prints and `hydranet eval --json` writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydranet.core.data_report import ProblemGroup, coverage_line, left_out
from hydranet.core.wording import plural


@dataclass
class Evaluation:
    """`TrainedModel.evaluate`'s answer: metrics next to the constant baseline, and the per-task details."""

    split: str
    images: int
    result: Any  # evaluation.EvalResult: losses, metrics, labelled counts, higher_is_better
    baselines: dict[str, dict[str, float]]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset: str = ""  # the dataset that read the images
    note: str = ""  # how the data was read, where it is not the obvious way (a drawn dataset's folder read as UTKFace)
    usable: int = 0  # readable, labelled images in every split
    #: the data report training prints (`PreparedData.notes`): what was skipped or treated as missing, and why
    data_notes: list[str] = field(default_factory=list)
    problems: list[ProblemGroup] = field(default_factory=list)  # the same, as counted groups with every item
    #: the absolute path of the folder the dataset read (its `root`); None for a dataset with no `root`
    data_root: str | None = None

    def __repr__(self) -> str:
        """Evaluation(split 'val', 60 images of utkface, age: mae 8.1 (baseline 12.3), ...): the figures a notebook
        user looks for, where the dataclass's repr printed every field, per-task details included (2,000+
        characters). The fields hold the rest (`details`, `data_notes`, `to_dict()`)."""
        def figures(task: str, metrics: Mapping[str, float]) -> str:
            baseline = self.baselines.get(task, {})
            return f"{task}: " + ", ".join(
                f"{name} {value:.4g}" + (f" (baseline {baseline[name]:.4g})" if name in baseline else "")
                for name, value in metrics.items())

        dataset = f" of {self.dataset}" if self.dataset else ""
        tasks = "; ".join(figures(task, metrics) for task, metrics in self.result.metrics.items())
        return f"Evaluation(split {self.split!r}, {plural(self.images, 'image')}{dataset}; {tasks})"

    @property
    def coverage(self) -> str:
        """'data: 20 images evaluated (the validation split of 96 usable images); 4 of ... were left out: ...'."""
        return coverage_line(self.images, self.usable, self.split, self.problems)

    def data_dict(self) -> dict[str, Any]:
        """What the metrics cover and what was left out of them, for `to_dict`: a JSON report must say it too."""
        return {"evaluated": self.images, "usable": self.usable, "listed": self.usable + left_out(self.problems),
                "summary": self.coverage, "report": self.data_notes,
                "problems": [group.to_dict() for group in self.problems if group.items]}

    def to_dict(self) -> dict[str, Any]:
        """Plain data for `hydranet eval --json`.

        A classification task that no confusion matrix fits (`task_answers.class_report`) is under
        "confusion_matrices" all the same, with a null "confusion_matrix" and a "note" saying why.
        """
        confusion = {k: v for k, v in self.details.items() if "confusion_matrix" in v}
        return {
            "split": self.split, "images": self.images, "dataset": self.dataset, "data_root": self.data_root,
            **({"note": self.note} if self.note else {}), "data": self.data_dict(), "metrics": self.result.metrics,
            "losses": self.result.losses, "labelled": self.result.labelled, "baselines": self.baselines,
            "confusion_matrices": confusion,
            "error_distributions": {k: v for k, v in self.details.items() if k not in confusion},
        }


__all__ = ["Evaluation"]
