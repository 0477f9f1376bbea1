"""The comparison `hydranet compare` shows: the metrics every run shares, each run's Δm, its labels and notes.

It takes runs already read (compare.py reads them from their folders) and
assembles them: which metrics all of them have, each run's Δm against the
reference and its seed groups' (the maths in delta_m.py), the runs' labels,
their order, and a note for whatever a reader should know (a metric left
out, a run stopped early, a run that read other data). How it is shown is
compare_output.py's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydranet.core.delta_m import (SEED_KEYS, PerTaskReference, RunGroup, delta_m, group_runs, mean_std,
                                   without_noise)
from hydranet.core.errors import HydranetError
from hydranet.core.param_text import flat_items, leaf_text
from hydranet.core.report import format_value
from hydranet.core.run import resume_command
from hydranet.core.run_record import RunRecord, epoch_list, run_differences
from hydranet.core.wording import english_list, plural


@dataclass
class TaskReference:
    """The run, or one spec's runs of several seeds (taken at their means), that one task's metrics are measured
    against (`--ref age=runs/stl_age`): a single-task baseline, as the multi-task literature reports Δm."""

    task: str
    given: str  # the folder as given
    group: RunGroup

    @property
    def label(self) -> str:
        """The folder as given, and its seeds where it is several runs: `runs/stl_age (seeds 0, 1)`."""
        return self.given + (f" (seeds {', '.join(map(str, self.group.seeds))})" if self.group.n > 1 else "")


@dataclass
class Comparison:
    """The runs (reference first among equals), the metrics all of them share, and each run's Δm."""

    runs: list[RunRecord]
    #: the run Δm is measured against; with `task_references`, the first run, which the "differs" column and the
    #: notes on other data measure against (no run is then the reference)
    reference: RunRecord
    epoch: str
    shared: list[tuple[str, str]]  # (task, metric), in the reference's order
    delta_m: dict[Path, float]  # run.path -> Δm in percent (NaN: no metric to compute it on)
    notes: list[str] = field(default_factory=list)
    #: the runs grouped by seed (the reference's group first among equals), when some group has several runs;
    #: their Δm, on the means, is in group_delta_m under each group's path
    groups: list[RunGroup] | None = None
    group_delta_m: dict[Path, float] = field(default_factory=dict)
    #: under each group's path, each of its runs' Δm (in the group's order) against the reference group's means:
    #: the spread of the group's Δm over its seeds (`group_delta_m_spread`)
    group_run_delta_m: dict[Path, list[float]] = field(default_factory=dict)
    #: which metrics the runs contribute: "val" (at `epoch`), or "test" (their test split's, at the best epoch)
    split: str = "val"
    #: a reference per task (`--ref TASK=RUN`), in the order of the compared tasks; empty: `reference` is the one
    task_references: list[TaskReference] = field(default_factory=list)

    def is_reference(self, row: RunRecord | RunGroup) -> bool:
        """Whether a row (a run, or a seed group) is the reference, whose Δm is 0 by definition: none is, where
        each task has its own reference."""
        if self.task_references:
            return False
        return row is self.reference or (isinstance(row, RunGroup) and self.reference in row.runs)

    @property
    def reference_row(self) -> RunRecord | RunGroup:
        """The row that holds `reference`: the reference (no row, with references per task: the first run's,
        which the "differs" column is told against)."""
        return next((g for g in self.groups or () if self.reference in g.runs), self.reference)

    @property
    def references_text(self) -> str:
        """Each task's reference, `age: runs/stl_age (seeds 0, 1), gender: runs/stl_gender` ('' for one reference)."""
        return ", ".join(f"{r.task}: {r.label}" for r in self.task_references)

    def group_delta_m_spread(self, group: RunGroup) -> tuple[float, float]:
        """The mean and sample std of the group's runs' Δm against the reference group's means (std NaN for one
        run); the mean is group_delta_m wherever every run has every metric."""
        mean, std = mean_std(self.group_run_delta_m[group.path]) or (math.nan, math.nan)
        return without_noise(mean), std  # runs of +x and -x: a mean of 0, not its last bits

    def higher_is_better(self, task: str, metric: str) -> bool:
        return self.reference.higher_is_better[task][metric]

    def __repr__(self) -> str:
        """One line, for a notebook that shows the comparison: which rows, against which reference, and each
        row's Δm as the table shows it (a seed group's: its runs' mean); `print` shows the whole table."""
        reference = self.references_text or self.reference.label or str(self.reference.path)
        if self.groups:
            rows = [(g.label, self.group_delta_m_spread(g)[0], self.is_reference(g)) for g in self.groups]
            what = f"{len(self.runs)} runs in {len(self.groups)} seed groups"
        else:
            rows = [(run.label, self.delta_m[run.path], self.is_reference(run)) for run in self.runs]
            what = f"{len(self.runs)} runs"
        deltas = ", ".join(f"{label} {_percent(delta)}" for label, delta, is_reference in rows if not is_reference)
        return (f"Comparison({what}, {self.split} metrics at the {_epoch_words(self.epoch)}, against {reference}"
                + (f"; delta_m: {deltas}" if deltas else "") + ")")

    def __str__(self) -> str:
        """The table `hydranet compare` prints, notes included."""
        from hydranet.core.compare_output import comparison_table  # it imports this module

        return comparison_table(self)


def _percent(delta: float) -> str:
    return "n/a" if math.isnan(delta) else f"{delta:+.2f}%"


def _epoch_words(epoch: str) -> str:
    return f"{epoch} epoch" if epoch in ("best", "last") else f"epoch {epoch}"


def compare_runs(runs: Sequence[RunRecord], reference: RunRecord, epoch: str | int = "best", sort: bool = False,
                 notes: Sequence[str] = (), group: bool = True, split: str = "val",
                 task_references: Sequence[TaskReference] = ()) -> Comparison:
    """Compare `runs` (which include `reference`) on the task metrics all of them have; `notes` come first.

    With `group`, runs that differ only in their seed are also grouped (see `group_runs`). With
    `task_references` (one per task, `--ref TASK=RUN`), each task's metrics are measured against its own
    reference, not `reference`, which the runs' differences and data are then told against.
    """
    shared, left_out = shared_metrics(runs, reference)
    if not shared:
        raise HydranetError(_nothing_shared(runs, reference))
    label_runs(runs)
    label_weightings(runs)
    notes = list(notes)
    notes += _left_out_notes(runs, left_out)
    task_references = list(task_references)
    against: RunRecord | PerTaskReference = reference
    if task_references:
        shared, task_references, said = _per_task(runs, shared, task_references)
        notes += said
        against = PerTaskReference.of({r.task: r.group for r in task_references})
    zero_at = len(notes)  # where the note on the reference's zeros goes, once the view (grouped or not) is known
    delta: dict[Path, float] = {}
    where = "test" if split == "test" else "validation"
    for run in runs:
        delta[run.path], missing = delta_m(run, against, shared)
        if missing:
            notes.append(f"{run.label}: no value (NaN: no labelled {where} image, or the run diverged) for "
                         f"{', '.join(missing)}, left out of its delta_m")
    than = f"the first run, {reference.label}" if task_references else "the reference"
    for run in runs:
        notes += _run_notes(run, reference, than)
    for ref in task_references:
        notes += _task_reference_notes(ref, shared, reference, where)
    notes += _processes_notes([*runs, *(run for ref in task_references for run in ref.group.runs)])
    ordered = list(runs)
    if sort:
        ordered.sort(key=lambda run: _best_first(delta[run.path]))
    comparison = Comparison(ordered, reference, str(epoch), shared, delta, notes, split=split,
                            task_references=task_references)
    if group:
        _add_groups(comparison, runs, sort)  # grouped as given: --sort orders the groups, not a group's seeds
    zero = _zero_note(comparison)
    if zero:
        comparison.notes.insert(zero_at, zero)
    return comparison


def _per_task(runs: Sequence[RunRecord], shared: list[tuple[str, str]], references: list[TaskReference]
              ) -> tuple[list[tuple[str, str]], list[TaskReference], list[str]]:
    """The metrics compared against per-task references, those references in the order of the compared tasks,
    and notes: a reference whose task is not compared (unused), a metric a task's reference lacks (left out), and
    the values each reference gives; a HydranetError where a compared task has no reference, a reference names a
    task no run has, or a reference has none of its task's metrics."""
    given = {r.task: r for r in references}
    given_text = ", ".join(f"{r.task}={r.given}" for r in references)
    tasks = list(dict.fromkeys(task for task, _ in shared))
    check_reference_tasks(runs, {r.task: r.given for r in references})
    lacking = [task for task in tasks if task not in given]
    if lacking:
        raise HydranetError(f"no reference for the task{'s' if len(lacking) > 1 else ''} {english_list(lacking)}: "
                            f"with references per task, every compared task needs one (given: --ref {given_text}); "
                            f"add {' '.join(f'--ref {task}=RUN' for task in lacking)}, a run trained on "
                            f"{'them' if len(lacking) > 1 else 'it'}")
    kept = []
    notes = [f"the reference for {r.task} (--ref {r.task}={r.given}) is not used: no {r.task} metric is compared, "
             "as not every run has one" for r in references if r.task not in tasks]
    for task in tasks:
        ref = given[task]
        theirs = ref.group.higher_is_better.get(task)
        if theirs is None:
            raise HydranetError(f"the reference for {task}, {ref.given}, has no task '{task}' (its tasks: "
                                f"{', '.join(ref.group.higher_is_better) or '(none)'}); give a run trained on {task}")
        metrics = [(t, m) for t, m in shared if t == task]
        has = [(t, m) for t, m in metrics if theirs.get(m) == runs[0].higher_is_better[t][m]]
        if not has:
            raise HydranetError(f"the reference for {task}, {ref.given}, has none of the compared {task} metrics "
                                f"({', '.join(f'{t}.{m}' for t, m in metrics)}; it has "
                                f"{', '.join(f'{task}.{m}' for m in theirs) or 'none'})")
        if len(has) < len(metrics):
            notes.append(f"left out, as the reference for {task} ({ref.label}) does not have "
                         f"{'it' if len(metrics) - len(has) == 1 else 'them'}: "
                         + ", ".join(f"{t}.{m}" for t, m in metrics if (t, m) not in has))
        kept += has
    label_runs([run for task in tasks for run in given[task].group.runs])
    for task in tasks:
        for run in given[task].group.runs:
            run.label = f"{run.label} ({task}'s reference)"
        ref, values = given[task], given[task].group.metrics[task]
        shown = ", ".join(f"{t}.{m} {format_value(values[m])}" for t, m in kept if t == task)
        notes.append(f"{task} is measured against {ref.label}"
                     + (f", at the mean of its {ref.group.n} runs" if ref.group.n > 1 else "") + f": {shown}")
    return kept, [given[task] for task in tasks], notes


def check_reference_tasks(runs: Sequence[RunRecord], given: Mapping[str, Any]) -> None:
    """A HydranetError where a reference is given for a task (task -> the folder given) that no compared run has:
    a typo, or a run folder that is not there named like a sweep's (`weighting=sum,train.seed=9`). Checked before
    the references are read, so that it is what the message says."""
    all_tasks = {task for run in runs for task in run.higher_is_better}
    unknown = [task for task in given if task not in all_tasks]
    if unknown:
        raise HydranetError(f"--ref {unknown[0]}={given[unknown[0]]}: no compared run has a task '{unknown[0]}' "
                            f"(their tasks: {', '.join(sorted(all_tasks))}), and no folder has that name; give "
                            "--ref TASK=RUN with one of those tasks, or a run folder that exists")


def _task_reference_notes(ref: TaskReference, shared: Sequence[tuple[str, str]], first: RunRecord,
                          where: str) -> list[str]:
    """A value a task's reference lacks, and what its runs' own notes say (stopped early, other data than the
    first compared run); which values it gives is said with the references (`_per_task`)."""
    values = ref.group.metrics[ref.task]
    metrics = [m for t, m in shared if t == ref.task]
    notes = []
    missing = [f"{ref.task}.{m}" for m in metrics if not math.isfinite(values[m])]
    if missing:
        notes.append(f"the reference for {ref.task}, {ref.label}: no value (NaN: no labelled {where} image, or the "
                     f"run diverged) for {', '.join(missing)}, left out of every delta_m")
    for run in ref.group.runs:
        notes += _run_notes(run, first, f"the first run, {first.label}")
    return notes


def _zero_note(comparison: Comparison) -> str | None:
    """Which metrics the Δm shown leaves out, the reference's value being 0 (a relative change to 0 has no size).

    Per run, that is the reference run's value; grouped, every Δm shown (on the means, and each run's behind the
    ± ) is against the reference group's means, so a 0 in one of its runs alone leaves nothing out. With a
    reference per task, that is each task's reference (its means, over several seeds).
    """
    if comparison.task_references:
        zero = [f"{t}.{m} ({r.label})" for r in comparison.task_references for t, m in comparison.shared
                if t == r.task and r.group.metrics[t][m] == 0]
        return f"left out of delta_m, its task's reference value being 0: {', '.join(zero)}" if zero else None
    if comparison.groups:
        values = next(g for g in comparison.groups if comparison.reference in g.runs).metrics
        whose = "the reference group's mean"
    else:
        values, whose = comparison.reference.metrics, "the reference's value"
    zero = [f"{t}.{m}" for t, m in comparison.shared if values[t][m] == 0]
    return f"left out of delta_m, {whose} being 0: {', '.join(zero)}" if zero else None


def shared_metrics(runs: Sequence[RunRecord],
                   reference: RunRecord) -> tuple[list[tuple[str, str]], dict[Path, list[str]]]:
    """The (task, metric) pairs every run has, in the reference's order, and per run.path the `task.metric`s it
    has that not every run has (what comparing, or plotting, them together leaves out).

    A metric counts as shared only where every run agrees whether higher is better.
    """
    keys = [_metric_keys(run) for run in runs]
    shared_keys = set.intersection(*keys) if keys else set()
    shared = [(task, metric) for task, metric, _ in _metric_keys(reference, ordered=True)
              if (task, metric, reference.higher_is_better[task][metric]) in shared_keys]
    left_out = {run.path: [f"{t}.{m}" for t, m, _ in sorted(own - shared_keys)] for run, own in zip(runs, keys)}
    return shared, left_out


#: past this many runs, a note about runs counts them instead of naming them
NAMED_RUNS = 3


def _left_out_notes(runs: Sequence[RunRecord], left_out: Mapping[Path, list[str]]) -> list[str]:
    """One note per set of metrics left out, naming the runs that have them (a count past NAMED_RUNS): 9 runs of
    which one lacks a metric the others have said the same line 8 times."""
    by_metrics: dict[tuple[str, ...], list[str]] = {}
    for run in runs:
        if left_out[run.path]:
            by_metrics.setdefault(tuple(left_out[run.path]), []).append(run.label)
    notes = []
    for left, labels in by_metrics.items():
        who = english_list(labels) if len(labels) <= NAMED_RUNS else plural(len(labels), "run")
        notes.append(f"{who}: left out, as not every run has {'it' if len(left) == 1 else 'them'}: {', '.join(left)}")
    return notes


def _best_first(delta: float) -> float:
    return -delta if math.isfinite(delta) else math.inf


def _add_groups(comparison: Comparison, runs: Sequence[RunRecord], sort: bool) -> None:
    """Group `runs` (as given) by seed; only when some group has several runs (else the table stays per run)."""
    groups, notes = group_runs(runs)
    comparison.notes += notes
    if all(g.n == 1 for g in groups):
        return
    name_groups(groups, seeds=True)
    reference: RunGroup | PerTaskReference = next(g for g in groups if comparison.reference in g.runs)
    if comparison.task_references:
        reference = PerTaskReference.of({r.task: r.group for r in comparison.task_references})
    for g in groups:
        comparison.group_delta_m[g.path] = delta_m(g, reference, comparison.shared)[0]
        comparison.group_run_delta_m[g.path] = [delta_m(run, reference, comparison.shared)[0] for run in g.runs]
    if sort:  # by the Δm the table shows: the mean of the group's runs' (not the Δm on its means, which a run
        # lacking a metric can set apart from it)
        groups.sort(key=lambda g: _best_first(comparison.group_delta_m_spread(g)[0]))
    comparison.groups = groups


def name_groups(groups: Sequence[RunGroup], seeds: bool = False) -> None:
    """Name each group of a seed-only sweep (`--sweep train.seed=0,1 --out runs/stl`, whose runs are named
    `train.seed=0`, ...) after what sets it apart from the other groups shown, where `group_runs` called it
    "train.seed=0 and 1 other seed".

    That is the name of the folder holding its runs (`stl`) where no other group's folder has that name, else
    its weighting where no other group has it, else the folder as given. With `seeds`, the name says them too,
    `stl (seeds 0, 1)`, where a table has no other place that says it is a group (a chart's legend says "mean of 2
    seeds" itself). Other groups keep `group_runs`'s name: a sweep's `weighting=dwa`, less its seed.
    """
    folders = [{run.path.parent for run in g.runs} for g in groups]
    for g, own in zip(groups, folders):
        if g.n == 1 or not all(_seed_only(run.path.name) for run in g.runs):
            continue
        others = [other for other in groups if other is not g]
        other_folders = {folder.name for f, other in zip(folders, groups) if other is not g for folder in f}
        weighting = g.runs[0].weighting_label
        folder = next(iter(own)) if len(own) == 1 else None
        if folder is not None and folder.name and folder.name not in other_folders:
            name = folder.name
        elif weighting not in {other.runs[0].weighting_label for other in others}:
            name = weighting
        elif folder is not None:
            name = str(folder)
        else:
            continue
        g.label = f"{name} (seeds {', '.join(map(str, g.seeds))})" if seeds else name


def _seed_only(name: str) -> bool:
    """Whether a run folder's name is its seed settings alone, as a seed-only sweep names them (`train.seed=0`)."""
    prefixes = tuple(f"{key}=" for key in SEED_KEYS)
    return all(part.startswith(prefixes) for part in name.split(","))


def _metric_keys(run: RunRecord, ordered: bool = False) -> Any:
    keys = [(t, m, up) for t, metrics in run.higher_is_better.items() for m, up in metrics.items()]
    return keys if ordered else set(keys)


def _nothing_shared(runs: Sequence[RunRecord], reference: RunRecord) -> str:
    def tasks(run: RunRecord) -> str:
        return ", ".join(run.higher_is_better) or "(none)"

    apart = [run for run in runs if not _metric_keys(run) & _metric_keys(reference)]
    if apart:
        return (f"no task metric to compare: {english_list([str(r.path) for r in apart])} "
                f"share{'s' if len(apart) == 1 else ''} none with the reference {reference.path} "
                f"(tasks: {tasks(reference)}; theirs: {'; '.join(tasks(r) for r in apart)}). "
                "Compare runs of the same tasks.")
    return ("no task metric is common to all these runs ("
            + "; ".join(f"{run.path}: {tasks(run)}" for run in runs) + "); compare fewer runs at a time.")


def _processes_notes(runs: Sequence[RunRecord]) -> list[str]:
    """A note when the runs trained on different numbers of processes (`--nproc`, summary.json's `processes`):
    the same spec then gives the same global batches, but not the same numbers to the bit (each process's own
    dropout draws, sums in another order). Runs that do not record it (unfinished, or older) are not counted."""
    known = {run.label: run.processes for run in runs if run.processes is not None}
    if len(set(known.values())) <= 1:
        return []
    said = ", ".join(f"{label}: {count}" for label, count in known.items())
    return [f"the runs trained on different numbers of processes (--nproc; {said}): their random draws (dropout) "
            "and rounding differ, so not all of a difference between them is their settings'"]


def _run_notes(run: RunRecord, reference: RunRecord, than: str = "the reference") -> list[str]:
    notes = []
    if run.epochs_done < run.epochs_planned:
        notes.append(f"{run.label} stopped after epoch {run.epochs_done} of {run.epochs_planned}; "
                     f"continue it with `{resume_command(run.path, processes=run.processes or 1)}`")
    missing = run.missing_epochs
    if missing:
        notes.append(f"{run.label}: its metrics.csv has no row for {epoch_list(missing)} (lost or deleted), so it "
                     f"records {plural(run.epochs_done - len(missing), 'epoch')}, not {run.epochs_done}; epochs_done "
                     f"(--csv, --json) is still its last row's epoch, and --json lists the missing ones")
    data = {key: value for key, value in run_differences(reference, run).items() if key.startswith("data.")}
    if data:
        notes.append(_other_data_note(run, reference, data, than))
    return notes


#: What a data setting that differs from the reference's may change in what a run learnt or was scored on. A
#: setting not named here (data.root, data.name, a dataset's own parameter) may have read other images.
DATA_CONSEQUENCES = {
    "data.csv": "the runs may have read different labels",
    "data.val_fraction": "they validate on other images",
    "data.split_seed": "they validate on other images",
    "data.test_fraction": "they train on other images (validation keeps the same ones)",
}
OTHER_IMAGES = "the runs may have read other images"


def _other_data_note(run: RunRecord, reference: RunRecord, data: Mapping[str, Any], than: str = "the reference") -> str:
    """"b read other data than the reference: data.csv differs (labels.csv in a, labels_2.csv in b): the runs
    may have read different labels; its metrics and delta_m may not compare like with like".

    Each setting that differs is named with both values and what it may change: another label CSV over the
    same images differs in its labels, another split seed in its validation images, another root in its
    images; a note that said "different images" for all of them sent the user looking in the wrong place.
    """
    by_consequence: dict[str, list[str]] = {}
    for key, value in data.items():
        theirs = _setting_text(reference.data_root if key == "data.root" else _dotted(reference.spec, key))
        by_consequence.setdefault(DATA_CONSEQUENCES.get(key, OTHER_IMAGES), []).append(
            f"{key} differs ({theirs} in {reference.label}, {_setting_text(value)} in {run.label})")
    said = "; ".join(f"{english_list(keys)}: {consequence}" for consequence, keys in by_consequence.items())
    return (f"{run.label} read other data than {than}: {said}; its metrics and delta_m may not compare "
            "like with like")


def _dotted(spec: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key of a spec (`data.csv`), or "(removed)" where the spec has no such key."""
    value: Any = spec
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return "(removed)"
        value = value[part]
    return value


def _setting_text(value: Any) -> str:
    """A data setting as the note shows it: as YAML writes it, with "not set" for null (the dataset's default)."""
    if value is None or value in ("(added)", "(removed)"):
        return "not set"
    return leaf_text(value)


def label_weightings(runs: Sequence[RunRecord]) -> None:
    """Set each run's `weighting_params`: the parameters in which runs of the same weighting differ.

    A sweep over `{name: static, weights: ...}` gives runs whose weighting is
    `static` in each; its name alone would show them alike. Parameters every
    run of that weighting shares (its defaults, or one run's own) are left out,
    so the column stays the name wherever that says it all.
    """
    missing = object()
    params = [_weighting_items(run.spec.get("weighting")) for run in runs]
    for run, own in zip(runs, params):
        peers = [other for r, other in zip(runs, params) if r.weighting == run.weighting]
        run.weighting_params = {key: value for key, value in own.items()
                                if any(other.get(key, missing) != value for other in peers)}


def _weighting_items(section: Any) -> dict[str, Any]:
    return {key: value for key, value in flat_items(section) if key != "name"} if isinstance(section, Mapping) else {}


def label_runs(runs: Sequence[RunRecord]) -> None:
    """Each run's folder name; the path as given where two runs share a name (what every output calls a run)."""
    names = [run.path.name or str(run.path) for run in runs]
    for run, name in zip(runs, names):
        run.label = name if names.count(name) == 1 else str(run.path)
