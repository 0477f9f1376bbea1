"""One run folder as `hydranet compare` sees it (RunRecord), and the error for a folder that cannot be compared.

Apart from compare.py, which reads the records from run folders, so that the
comparison (comparison.py) and its maths (delta_m.py) need the record alone,
not the reading.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydranet.core.errors import HydranetError
from hydranet.core.param_text import call_text, leaf_text
from hydranet.core.plot import RunSeries
from hydranet.core.spec_differences import component_name, differences
from hydranet.core.wording import english_list

class RunProblem(HydranetError):
    """A RUN argument that cannot be compared; the message names the folder and what to do."""


@dataclass
class RunRecord:
    """One run folder as compared: its spec, and its metrics at the chosen epoch."""

    path: Path
    spec: dict[str, Any]
    epochs_done: int
    best_epoch: int | None  # None: neither summary.json nor best.pt says
    epoch: int  # the epoch the metrics are read at
    metrics: dict[str, dict[str, float]]  # task -> metric -> value
    higher_is_better: dict[str, dict[str, bool]]
    label: str = ""
    #: its metrics.csv, every column (what `hydranet plot` draws, read once with the rest)
    series: RunSeries = field(default_factory=lambda: RunSeries([]), repr=False, compare=False)
    #: the median seconds of its training epochs (`train_seconds_per_epoch`); None where the run recorded none
    train_seconds: float | None = None
    #: its summary.json (None before it finished), kept so that its test metrics need no second read (`on_test_split`)
    summary: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    #: the weighting's parameters (dotted keys) in which runs of its weighting compared with it differ
    #: (`label_weightings`): what tells two `static` runs apart
    weighting_params: dict[str, Any] = field(default_factory=dict)

    #: its checkpoints as read so far (name -> state, None where absent or unreadable): last.pt answers both
    #: `started_in` and `processes`, so it is read once (`_checkpoint`)
    _checkpoints: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def started_in(self) -> str | None:
        """The folder the run started in, which its checkpoints record (`started_in`, as `hydranet eval` reads it):
        what a relative data.root counts from. None where no checkpoint of it says (a run stopped in its first
        epoch, or one written before it was recorded). Read once, and only when asked."""
        for name in ("last.pt", "best.pt"):
            saved = self._checkpoint(name)
            started = saved.get("started_in") if saved is not None else None
            if isinstance(started, str) and started:
                return started
        return None

    @property
    def data_root(self) -> Any:
        """Its spec's data.root, a relative one counted from the folder the run started in (`started_in`), as the run
        read it; as written where it is not a path, or where the run does not say where it started."""
        data = self.spec.get("data")
        root = data.get("root") if isinstance(data, Mapping) else None
        if not isinstance(root, str):
            return root
        path = os.path.expanduser(root)
        if not os.path.isabs(path):
            if self.started_in is None:
                return root
            path = os.path.join(self.started_in, path)
        return os.path.normpath(path)

    @property
    def processes(self) -> int | None:
        """How many processes trained it (`--nproc`): summary.json's `processes`, or for a run not finished (no
        summary.json) the number whose random states its last.pt holds, read once and only when asked. None where
        neither says (a finished run written before it was recorded, a stopped one without last.pt)."""
        if self.summary is not None:
            count = self.summary.get("processes")
            return count if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else None
        saved = self._checkpoint("last.pt")
        progress = saved.get("progress") if saved is not None else None
        if not isinstance(progress, Mapping):
            return None
        states = progress.get("process_generators")  # a one-process run's holds none: 1
        return len(states) if isinstance(states, list) and states else 1

    def _checkpoint(self, name: str) -> Mapping[str, Any] | None:
        """The run's checkpoint `name`, read once, without its tensors' data (mmap); None where absent or not a
        checkpoint (then what it would say stays unknown)."""
        if name not in self._checkpoints:
            self._checkpoints[name] = _read_quietly(self.path / name)
        return self._checkpoints[name]

    @property
    def weighting(self) -> str:
        return component_name(self.spec.get("weighting"))

    @property
    def weighting_label(self) -> str:
        """The weighting column: its name, and the parameters that set it apart, `static(weights.age=2)`."""
        return call_text(self.weighting, [(key, leaf_text(value)) for key, value in self.weighting_params.items()])

    @property
    def backbone(self) -> str:
        return component_name(self.spec.get("backbone"))

    @property
    def epochs_planned(self) -> int:
        return int(self.spec.get("train", {}).get("epochs", self.epochs_done))

    @property
    def missing_epochs(self) -> list[int]:
        """The epochs before its last (`epochs_done`, the last row's epoch) that its metrics.csv has no row for: a
        row lost or deleted, which a count of epochs that reads the last row's number would hide."""
        if not self.series.epochs:  # a record made without its metrics.csv read: nothing known to be missing
            return []
        have = {int(epoch) for epoch in self.series.epochs if epoch == epoch}  # NaN: an unreadable epoch cell
        return [epoch for epoch in range(1, self.epochs_done + 1) if epoch not in have]

    @property
    def epochs_text(self) -> str:
        """The epochs column: `3/3`, or `3/3 (epoch 2 missing)` where metrics.csv lost rows (`missing_epochs`)."""
        done = f"{self.epochs_done}/{self.epochs_planned}"
        missing = self.missing_epochs
        return f"{done} ({epoch_list(missing)} missing)" if missing else done


def epoch_list(epochs: list[int]) -> str:
    """`epoch 2`, `epochs 2 and 4`, `epochs 2-5` (a run of three or more written as a span)."""
    spans: list[list[int]] = []
    for epoch in epochs:
        if spans and epoch == spans[-1][-1] + 1:
            spans[-1].append(epoch)
        else:
            spans.append([epoch])
    words = [word for s in spans for word in ([f"{s[0]}-{s[-1]}"] if len(s) > 2 else map(str, s))]
    return f"epoch{'s' if len(epochs) > 1 else ''} {english_list(words)}"


def _read_quietly(path: Path) -> Mapping[str, Any] | None:
    """A checkpoint's state read without its tensors' data (mmap), or None for one absent or unreadable."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # absent, or not a checkpoint
        return None
    return saved if isinstance(saved, Mapping) else None


def run_differences(reference: RunRecord, run: RunRecord, names: bool = False) -> dict[str, Any]:
    """`differences` between the runs' specs (dotted key -> the run's value), with data.root compared as the folders
    the runs read: a relative root counts from the folder each run started in (`data_root`). So `faces` started in
    /tmp/w and `/tmp/w/faces` are one folder, and `faces` started in two folders two; a root that differs is
    shown as the folder the run read."""
    found = differences(reference.spec, run.spec, names=names)
    if found.get("data.root") in ("(added)", "(removed)") or not _has_root(reference) or not _has_root(run):
        return found
    raw_differs = "data.root" in found
    if not raw_differs and not _is_relative(run.spec["data"]["root"]):
        return found  # one absolute root, the same in both: nothing to read
    if not _root_known(reference) or not _root_known(run):
        return found  # a relative root whose run does not say where it started: compared as written, as before
    mine, theirs = run.data_root, reference.data_root
    if mine == theirs:
        found.pop("data.root", None)
    else:
        found["data.root"] = mine
    return found


def _has_root(run: RunRecord) -> bool:
    data = run.spec.get("data")
    return isinstance(data, Mapping) and isinstance(data.get("root"), str)


def _root_known(run: RunRecord) -> bool:
    """Whether the folder `run` read is known: its root is absolute, or its checkpoints say where it started (not
    so for a run whose checkpoints were deleted, or one written before `started_in` was recorded)."""
    return not _is_relative(run.spec["data"]["root"]) or run.started_in is not None


def _is_relative(root: str) -> bool:
    return not os.path.isabs(os.path.expanduser(root))
