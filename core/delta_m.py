"""The maths of `hydranet compare`: Δm, and runs that differ only in their seed taken as one group.

Δm is the mean relative change against a reference, in percent (Maninis et
al., CVPR 2019), as LibMTL computes it:

    Δm = 100 / T * sum_t 1/M_t * sum_m (-1)^l_tm * (M_run,tm - M_ref,tm) / M_ref,tm

over the T tasks and each task's M_t metrics, with l_tm = 1 where lower is
better. Each task counts once, whatever its number of metrics; positive is
better than the reference: one run or group, or a reference per task (single-task
baselines, PerTaskReference), each giving its own task's M_ref.

Runs that differ only in their seed (SEED_KEYS) are one RunGroup: each
metric's mean and sample std over its runs; a group stands where a run
stands in Δm, so Δm is computed on its means, as the literature reports it.
Apart from comparison.py, which assembles the comparison (which metrics,
which notes, which order) from these.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydranet.core.run_record import RunRecord, run_differences
from hydranet.core.values import is_number
from hydranet.core.wording import english_list, plural

#: Spec keys in which runs of one experiment, repeated for its spread, differ: `compare` shows such runs as one
#: row (mean ± std). Not data.split_seed: another split validates on other images, which do not average.
SEED_KEYS = ("train.seed",)


@dataclass
class RunGroup:
    """Runs whose specs differ only in a seed (SEED_KEYS): one experiment, measured `n` times, in seed order.

    It stands where a run stands in Δm (`metrics` are the means), so Δm is
    computed on the means, as the literature reports it; its spread over the
    seeds is Comparison.group_run_delta_m.
    """

    runs: list[RunRecord]
    label: str = ""

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def path(self) -> Path:  # the key Δm is stored under: its first run's
        return self.runs[0].path

    @property
    def spec(self) -> dict[str, Any]:
        return self.runs[0].spec

    @property
    def seeds(self) -> list[Any]:
        return [_seed(run.spec) for run in self.runs]

    @property
    def higher_is_better(self) -> dict[str, dict[str, bool]]:
        return self.runs[0].higher_is_better

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Each metric's mean over the runs (NaN where a run has none)."""
        return self._over_runs(statistics.fmean)

    @property
    def std(self) -> dict[str, dict[str, float]]:
        """Each metric's sample standard deviation over the runs (NaN for one run)."""
        return self._over_runs(sample_std)

    @property
    def train_seconds(self) -> tuple[float, float] | None:
        """The mean and sample std (NaN for one) of its runs' training seconds per epoch, over the runs that
        recorded them; None where none did."""
        return mean_std([run.train_seconds for run in self.runs if run.train_seconds is not None])

    def _over_runs(self, reduce: Any) -> dict[str, dict[str, float]]:
        return {task: {metric: reduce([run.metrics[task][metric] for run in self.runs]) for metric in metrics}
                for task, metrics in self.higher_is_better.items()}


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
    """The mean and sample std (`sample_std`) of `values`; None for no value."""
    return (statistics.fmean(values), sample_std(values)) if values else None


def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation; NaN for one value, or where a value is NaN (a run with no value there, or
    one that diverged), as the mean is: `statistics.stdev` raises AttributeError on a NaN."""
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return math.nan
    return statistics.stdev(values)


def _seed(spec: Mapping[str, Any]) -> Any:
    train = spec.get("train")
    return train.get("seed", 0) if isinstance(train, Mapping) else 0


def seed_key(seed: Any) -> tuple[int, Any]:
    """What tells seeds apart, and orders them: numbers by value (1 and 1.0 are one seed, as `differences` holds
    1 == 1.0 everywhere else in a spec), anything else after them by its text (so `true` is not the seed 1)."""
    return (0, seed) if is_number(seed) else (1, repr(seed))


def _seed_order(run: RunRecord) -> tuple[int, Any]:
    return seed_key(_seed(run.spec))


def group_runs(runs: Sequence[RunRecord]) -> tuple[list[RunGroup], list[str]]:
    """Runs whose specs differ only in SEED_KEYS, as groups (in the order of their first run; each group's runs in
    the order of their seeds), and notes.

    Runs of the same spec and the same seed are repeats of one run, not seeds:
    where some runs of a group share a seed, its runs are shown apart, with a note.
    """
    classes: list[list[RunRecord]] = []
    for run in runs:
        same = next((c for c in classes if set(run_differences(c[0], run, names=True)) <= set(SEED_KEYS)),
                    None)
        if same is None:
            classes.append([run])
        else:
            same.append(run)
    groups, notes = [], []
    for members in classes:
        seeds = {seed_key(_seed(run.spec)) for run in members}
        if len(seeds) == len(members):
            groups.append(RunGroup(sorted(members, key=_seed_order)))
            continue
        groups += [RunGroup([run]) for run in members]
        if len(seeds) > 1:
            notes.append(f"{english_list([run.label for run in members])} differ only in {english_list(SEED_KEYS)}, "
                         "but some share one: repeats of a run are not seeds, so they are shown apart")
    for g in groups:
        g.label = _group_label(g)
    return groups, notes


def _group_label(group: RunGroup) -> str:
    """The runs' common name: a sweep's `weighting=dwa,train.seed=1` less its seed; else the first run's name."""
    first = group.runs[0].label
    if group.n == 1:
        return first
    seeds = tuple(f"{key}=" for key in SEED_KEYS)
    stripped = {",".join(part for part in run.label.split(",") if not part.startswith(seeds)) for run in group.runs}
    if len(stripped) == 1 and "" not in stripped:
        return stripped.pop()
    return f"{first} and {plural(group.n - 1, 'other seed')}"


@dataclass
class PerTaskReference:
    """References given per task (`--ref age=runs/stl_age`, the single-task baselines the literature reports Δm
    against) seen as one: each task's metrics, and whether higher is better, taken from that task's own run or
    seed group (at its means), so that `delta_m` takes it where it takes one run or group."""

    metrics: dict[str, dict[str, float]]
    higher_is_better: dict[str, dict[str, bool]]

    @classmethod
    def of(cls, references: Mapping[str, RunRecord | RunGroup]) -> PerTaskReference:
        return cls({task: ref.metrics[task] for task, ref in references.items()},
                   {task: ref.higher_is_better[task] for task, ref in references.items()})


def delta_m(run: RunRecord | RunGroup, reference: RunRecord | RunGroup | PerTaskReference,
             shared: Sequence[tuple[str, str]]) -> tuple[float, list[str]]:
    """Δm of `run` against `reference` in percent, and the shared metrics it has no value for (groups: their means)."""
    per_task: dict[str, list[float]] = {}
    missing = []
    for task, metric in shared:
        ref, value = reference.metrics[task][metric], run.metrics[task][metric]
        if not math.isfinite(value):
            missing.append(f"{task}.{metric}")
        if ref == 0 or not (math.isfinite(ref) and math.isfinite(value)):
            continue
        sign = 1 if reference.higher_is_better[task][metric] else -1
        per_task.setdefault(task, []).append(sign * (value - ref) / abs(ref) * 100)
    means = [sum(changes) / len(changes) for changes in per_task.values()]
    return (without_noise(sum(means) / len(means)) if means else math.nan), missing


#: Δm (in percent) closer to 0 than this is rounding in the sums, not a change: a group identical to the reference
#: has a Δm of 2.2e-15 from its means' last bits, which the table shows as +0.00 and CSV and JSON would write whole
NOISE = 1e-9


def without_noise(delta: float) -> float:
    return 0.0 if abs(delta) < NOISE else delta
