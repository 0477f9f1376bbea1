"""`hydranet compare RUN [RUN ...]`: several runs of the same tasks side by side, and their Δm.

A user who trained the same tasks several ways (another weighting, backbone
or setting per run) reads here which way won. Each run contributes its
validation metrics at one epoch (its best by default: the epoch best.pt
holds), read from its metrics.csv, and one figure that sums them up: Δm, the
mean relative change against a reference run, in percent (Maninis et al.,
CVPR 2019), as LibMTL computes it:

    Δm = 100 / T * sum_t 1/M_t * sum_m (-1)^l_tm * (M_run,tm - M_ref,tm) / M_ref,tm

over the T tasks and each task's M_t metrics, with l_tm = 1 where lower is
better. Each task counts once, whatever its number of metrics; positive is
better than the reference.

Runs that differ only in their seed are one group: each metric's mean and
sample std over its runs, Δm computed on the means against the reference's
group (as the literature reports it), and, for its spread, each run's own Δm
against the reference group's means, their mean and sample std (the mean is
the Δm on the means wherever every run has every metric: Δm is linear in
the run's metrics). Each run's cost is shown too: the median seconds of its
training epochs.

With `split="test"` (`--split test`) each run contributes instead the
metrics its best epoch's weights scored once on its held-out test split
(`data.test_fraction`, summary.json's `test`): the numbers to report, as the
validation ones chose the epoch. Δm and grouping work the same on either.

A RUN may be a sweep folder (`hydranet train --sweep`'s), which stands for
its runs in the sweep's order, as `hydranet plot` takes it.

Whether higher is better is known to each task's metrics, not to the run
folder. The run's spec.yaml names its tasks, so they are built again through
the task registry (this module does not import a task), and their metrics
say.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hydranet.core.errors import HydranetError
from hydranet.core.param_text import call_text, flat_items, leaf_text
from hydranet.core.plot import CHARTS, RunSeries, expand_sweep_folders, series_from_rows
from hydranet.core.run import FAILURE_LINE, RUN_FILES, read_metrics
from hydranet.core.spec_models import with_section_defaults
from hydranet.core.values import is_number
from hydranet.core.wording import english_list, plural

#: Spec keys in which runs of one experiment, repeated for its spread, differ: `compare` shows such runs as one
#: row (mean ± std). Not data.split_seed: another split validates on other images, which do not average.
SEED_KEYS = ("train.seed",)

#: The file a sweep writes beside its run folders (core/sweep.py): `hydranet compare SWEEP/*` passes over it.
COMPARE_CSV = "compare.csv"
#: The same comparison on the runs' test splits, written beside it when the sweep's runs have test metrics.
COMPARE_TEST_CSV = "compare-test.csv"

#: The parts of the data `compare --split` reads each run's metrics from.
COMPARE_SPLITS = ("val", "test")

#: Spec keys that change how a run trains, not what it learns: left out of what "differs" between runs.
HOW_NOT_WHAT = {"data.workers", "data.cache", "data.placement", "data.device_memory_gb", "train.log_every",
                "train.eval_batch_size", "train.compile_in_background"}


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

    @property
    def weighting(self) -> str:
        return _name(self.spec.get("weighting"))

    @property
    def weighting_label(self) -> str:
        """The weighting column: its name, and the parameters that set it apart, `static(weights.age=2)`."""
        return call_text(self.weighting, [(key, leaf_text(value)) for key, value in self.weighting_params.items()])

    @property
    def backbone(self) -> str:
        return _name(self.spec.get("backbone"))

    @property
    def epochs_planned(self) -> int:
        return int(self.spec.get("train", {}).get("epochs", self.epochs_done))


def _name(section: Any) -> str:
    return str(section.get("name", "?")) if isinstance(section, Mapping) else str(section)


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


def read_run(path: str | Path, epoch: str | int = "best", components: Any = None, split: str = "val") -> RunRecord:
    """A run folder's spec and its validation metrics at `epoch` (best, last or a number); with `split` "test",
    the test metrics its best epoch's weights scored (summary.json's `test`), for which `epoch` must be best."""
    path = Path(path)
    if split == "test" and str(epoch) != "best":
        raise HydranetError(f"test metrics exist only for the best epoch (scored once with best.pt's weights), "
                            f"not epoch {epoch}: compare the test split at the best epoch, or epoch {epoch} on the "
                            "validation split (--split val)")
    if not path.exists():
        raise RunProblem(f"{path}: no such folder")
    if not path.is_dir():
        folder = f"; pass its folder, {path.parent}" if path.name in RUN_FILES else ""
        raise RunProblem(f"{path} is a file, not a run folder{folder}")
    if not (path / "spec.yaml").is_file():
        inside = sorted(p.name for p in path.iterdir() if (p / "spec.yaml").is_file())
        # a RUN that holds runs is a sweep folder and stands for them (`read_runs`): what comes here is one
        # run asked for, as --ref asks for one
        hint = (f"; it holds runs ({english_list(inside[:3])}{', ...' if len(inside) > 3 else ''}): "
                f"name one of them, as in {path / inside[0]}" if inside
                else "; pass folders that `hydranet train` wrote")
        raise RunProblem(f"{path} is not a run folder (no spec.yaml){hint}")
    try:
        spec = yaml.safe_load((path / "spec.yaml").read_text(encoding="utf-8"))
        rows = read_metrics(path / "metrics.csv") if (path / "metrics.csv").is_file() else []
    except (OSError, UnicodeDecodeError, yaml.YAMLError, csv.Error) as error:
        raise RunProblem(f"cannot read the run in {path}: {error}") from None
    if not isinstance(spec, dict):
        raise RunProblem(f"{path / 'spec.yaml'} is not a spec; was it written by `hydranet train`?")
    spec = with_section_defaults(spec)  # a key added since the run was written is the default it trained with
    if not rows:
        failure = _failure_logged(path)
        if failure:
            what = f"it failed ({failure}); fix that and train it again"
        elif (path / "last.pt").is_file():
            what = f"it stopped during its first epoch; continue it with `hydranet train --resume {path}`"
        else:
            what = "it is still in its first epoch, or stopped before that epoch ended and must be trained again"
        raise RunProblem(f"{path} has no finished epoch yet (no metrics in metrics.csv): {what}")
    series = series_from_rows(rows)
    epochs = [int(e) for e in series.epochs]
    summary = _read_summary(path)
    best = _best_epoch(path, summary)
    at = {"best": best, "last": epochs[-1]}.get(str(epoch), epoch)
    if at is None or at < 1:
        why = "neither summary.json nor best.pt says which" if at is None else "no epoch had a finite validation loss"
        raise RunProblem(f"{path} has no best epoch ({why}); compare it with --epoch last")
    if at not in epochs:
        raise RunProblem(f"{path} has no epoch {at} in its metrics.csv (it has {_epoch_span(epochs)})")
    row = len(epochs) - 1 - epochs[::-1].index(at)  # a resumed run may repeat an epoch: its last row counts
    directions = recorded_directions(summary, spec) or metric_directions(path, spec, components)
    metrics = {task: {m: series.metrics.get(task, {}).get(m, [math.nan] * len(epochs))[row] for m in names}
               for task, names in directions.items()}
    record = RunRecord(path, spec, epochs[-1], best, at, metrics, directions, series=series,
                       train_seconds=train_seconds_per_epoch(summary, rows), summary=summary)
    return _test_record(record) if split == "test" else record


def _test_record(record: RunRecord) -> RunRecord:
    """The run read at its best epoch, with the metrics its best epoch's weights scored on its test split."""
    return dataclasses.replace(record, metrics=_test_metrics(record.path, record.summary, record.higher_is_better))


def on_test_split(records: Sequence[RunRecord]) -> tuple[list[RunRecord], RunRecord, list[str]]:
    """`records` (read at their best epoch) with their test split's metrics, as `read_runs(..., skip_bad=True,
    as_given=True, split="test")` would read them, without reading any run again: the runs, the first of them
    as the reference, and a note per run left out (one without test metrics).

    What a sweep that writes both compare.csv and compare-test.csv reads its runs once for.
    """
    found, left_out = [], []
    for record in records:
        try:
            if record.epoch != record.best_epoch:
                raise RunProblem(f"{record.path} was read at epoch {record.epoch}: test metrics are its best "
                                 "epoch's only")
            found.append(_test_record(record))
        except RunProblem as problem:
            left_out.append(problem)
    if not found:
        raise _none_to_compare(left_out)
    return found, found[0], [f"skipped: {problem}" for problem in left_out]


def _none_to_compare(problems: Sequence[RunProblem]) -> RunProblem:
    """No run can be compared: the one reason, or each folder's."""
    return RunProblem(str(problems[0]) if len(problems) == 1 else describe_problems(problems))


def _test_metrics(path: Path, summary: Mapping[str, Any] | None,
                  directions: Mapping[str, Mapping[str, bool]]) -> dict[str, dict[str, float]]:
    """task -> metric -> value on the run's test split, as summary.json recorded them (NaN where it has none)."""
    if summary is None:
        raise RunProblem(f"{path} has no test metrics yet: they are scored when a run finishes, and it has no "
                         "summary.json; compare it with --split val, or finish it first")
    if "test" not in summary:
        raise RunProblem(f"{path} has no test metrics: its spec has no test split (data.test_fraction is 0); "
                         "compare it with --split val, or train it again with data.test_fraction > 0")
    test = summary["test"]
    if test is None:
        raise RunProblem(f"{path} has no test metrics: no epoch had a finite validation loss, so there were no "
                         "best-epoch weights to score on its test split")
    if not isinstance(test, Mapping):
        raise _unreadable_summary(path, ValueError(f"'test' is {type(test).__name__}, not task metrics"))

    def value(task: str, metric: str) -> float:
        found = test.get(task)
        number = found.get(metric) if isinstance(found, Mapping) else None
        return float(number) if is_number(number) else math.nan

    return {task: {metric: value(task, metric) for metric in names} for task, names in directions.items()}


def train_seconds_per_epoch(summary: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The median seconds of a run's training epochs (validation not counted; the median, so that the first
    epoch's compilation does not count): summary.json's timings.epoch_train_seconds, or, where it has none (a
    run that has not finished), metrics.csv's train_seconds column; None where neither has a number."""
    timings = summary.get("timings") if summary is not None else None
    seconds = timings.get("epoch_train_seconds") if isinstance(timings, Mapping) else None
    if not isinstance(seconds, list) or not seconds:
        seconds = [row.get("train_seconds") for row in rows]
    values = [float(v) for v in seconds if is_number(v) and math.isfinite(v)]
    return statistics.median(values) if values else None


def _epoch_span(epochs: Sequence[int]) -> str:
    return f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]} to {epochs[-1]}"


def _failure_logged(path: Path) -> str | None:
    """The error a run that failed after setup logged last in its train.log (None: it logged none)."""
    try:
        lines = (path / "train.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    said = [line for line in lines if line.startswith(FAILURE_LINE)]
    return said[-1].split("): ", 1)[-1] if said else None


def _read_summary(path: Path) -> dict[str, Any] | None:
    """The run's summary.json, written once the run finished (None before that), read once for all it tells."""
    summary = path / "summary.json"
    if not summary.is_file():
        return None
    try:
        return json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise _unreadable_summary(path, error) from None


def _unreadable_summary(path: Path, error: Exception) -> RunProblem:
    return RunProblem(f"cannot read the best epoch from {path / 'summary.json'}: {error}")


def _best_epoch(path: Path, summary: Mapping[str, Any] | None) -> int | None:
    """The epoch best.pt holds: summary.json says so once the run finished; before that, best.pt itself."""
    if summary is not None:
        try:
            return int(summary["best_epoch"])
        except (ValueError, KeyError, TypeError) as error:
            raise _unreadable_summary(path, error) from None
    if not (path / "best.pt").is_file():
        return None
    from hydranet.core.checkpoint import read_checkpoint

    return int(read_checkpoint(path / "best.pt")["epoch"])


def recorded_directions(summary: Mapping[str, Any] | None,
                        spec: Mapping[str, Any]) -> dict[str, dict[str, bool]] | None:
    """task -> metric -> higher is better, as the run's summary.json recorded it (None: not recorded).

    A finished run records it, so it compares even where its task plugins are no
    longer installed; a run that stopped early, or one written before this was
    recorded, has its tasks rebuilt instead (`metric_directions`).
    """
    recorded = summary.get("higher_is_better") if summary is not None else None
    names = [section.get("name") if isinstance(section, Mapping) else section for section in spec.get("tasks") or []]
    if not isinstance(recorded, dict) or list(recorded) != names:
        return None
    return {task: {metric: bool(up) for metric, up in metrics.items()} for task, metrics in recorded.items()}


def metric_directions(path: Path, spec: Mapping[str, Any], components: Any = None) -> dict[str, dict[str, bool]]:
    """task -> metric -> higher is better, for the tasks of a run's spec, built through the task registry."""
    from pydantic import ValidationError

    from hydranet.core.plugins import default_components
    from hydranet.core.spec import ResolvedComponent, ResolvedTask

    registry = (components or default_components()).tasks
    directions = {}
    for section in spec.get("tasks") or []:
        params = dict(section) if isinstance(section, Mapping) else {"name": section}
        name = str(params.pop("name", "?"))
        kind = str(params.pop("kind", name))
        try:
            entry = registry.get(kind)
            task = ResolvedTask(name, ResolvedComponent("task", entry, entry.validate_params(params))).build()
        except (HydranetError, ValidationError) as error:
            raise RunProblem(f"{path}: cannot rebuild its task '{name}' to learn whether each of its metrics is "
                             f"better higher or lower ({error}); install the plugin that registers "
                             f"'{kind}' (`hydranet plugins` lists those loaded)") from None
        directions[name] = {metric: bool(m.higher_is_better) for metric, m in task.metrics().items()}
    return directions


def read_runs(paths: Sequence[str | Path], ref: str | Path | None = None, epoch: str | int = "best",
              skip_bad: bool = False, components: Any = None,
              as_given: bool = False, split: str = "val") -> tuple[list[RunRecord], RunRecord, list[str]]:
    """The runs `paths` name (each once), the reference among them, and a note per folder skipped.

    A sweep folder among `paths` stands for its runs, in the sweep's order
    (`expand_sweep_folders`, as `hydranet plot` takes it). The reference is
    `ref`, else the first of the runs. Runs of one sweep folder are taken in
    its compare.csv's order unless `as_given` (the sweep itself, whose order
    is its own, and whose compare.csv may be an earlier run's, of values in
    another order); `ref` keeps its place among them, and is put first only
    when `paths` do not name it. A folder that cannot be compared stops the
    command, every such folder listed at once; with `skip_bad` it is left out
    with a note instead (`hydranet compare runs/*` over a folder holding
    other things), except the reference named by `ref`. A sweep folder's run
    that cannot be compared (one that failed) is always left out with a note,
    as the sweep's own comparison leaves it out.
    """
    unique: dict[Path, tuple[Path, bool]] = {}  # resolved -> (the path as given, whether from a sweep folder)
    for path, from_sweep in expand_sweep_folders(paths):
        if path.name in (COMPARE_CSV, COMPARE_TEST_CSV, *CHARTS) and path.is_file():  # a sweep's table and charts: `SWEEP/*` names them
            continue
        unique.setdefault(path.resolve(), (path, from_sweep))
    if not as_given:  # `SWEEP/*` names the runs by name: the sweep's order makes its reference the default again
        unique = {path.resolve(): unique[path.resolve()] for path in _sweep_ordered([p for p, _ in unique.values()])}
    if ref is not None and Path(ref).resolve() not in unique:
        unique = {Path(ref).resolve(): (Path(ref), False), **unique}
    runs, problems, left_out = [], [], []
    for resolved, (path, from_sweep) in unique.items():
        try:
            runs.append(read_run(path, epoch, components, split))
        except RunProblem as problem:
            if ref is not None and resolved == Path(ref).resolve():
                raise RunProblem(f"the reference (--ref) cannot be compared: {problem}") from None
            (left_out if skip_bad or from_sweep else problems).append(problem)
    if not runs:
        raise _none_to_compare(problems + left_out)
    if problems:
        raise RunProblem(f"{describe_problems(problems)}\nLeave {'it' if len(problems) == 1 else 'them'} out, "
                         "or pass --skip-bad to compare the others.")
    reference = runs[0] if ref is None else next(r for r in runs if r.path.resolve() == Path(ref).resolve())
    return runs, reference, [f"skipped: {problem}" for problem in left_out]


def _sweep_ordered(paths: list[Path]) -> list[Path]:
    """`paths` in their sweep's order when all are runs of one sweep folder (it holds compare.csv), else as given.

    The shell sorts `SWEEP/*` by name, where the sweep ran (and compared) its runs in the order of its values:
    without this, `hydranet compare SWEEP/*` would measure against another reference than the sweep's table.
    """
    folders = {path.resolve().parent for path in paths}
    if len(folders) != 1 or not (next(iter(folders)) / COMPARE_CSV).is_file():
        return paths
    return in_sweep_order(next(iter(folders)), paths)


def in_sweep_order(folder: Path, runs: Sequence[Path]) -> list[Path]:
    """`runs` of a sweep `folder` in the order its compare.csv lists them; the runs it does not list follow, by name."""
    listed = _compare_csv_names(folder / COMPARE_CSV)
    return sorted(runs, key=lambda run: (listed.index(run.name) if run.name in listed else len(listed), run.name))


def _compare_csv_names(path: Path) -> list[str]:
    """The run folder names compare.csv lists, in its order (its `run` column, or each group's `runs`)."""
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # the order is a nicety; the runs themselves are read and checked as ever
    paths = [p for row in rows for p in (row.get("run") or row.get("runs") or "").split(";") if p]
    return [Path(p).name for p in paths]


# ------------------------------------------------------------------ the comparison


@dataclass
class Comparison:
    """The runs (reference first among equals), the metrics all of them share, and each run's Δm."""

    runs: list[RunRecord]
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

    def group_delta_m_spread(self, group: RunGroup) -> tuple[float, float]:
        """The mean and sample std of the group's runs' Δm against the reference group's means (std NaN for one
        run); the mean is group_delta_m wherever every run has every metric."""
        return mean_std(self.group_run_delta_m[group.path]) or (math.nan, math.nan)

    def higher_is_better(self, task: str, metric: str) -> bool:
        return self.reference.higher_is_better[task][metric]


def compare_runs(runs: Sequence[RunRecord], reference: RunRecord, epoch: str | int = "best", sort: bool = False,
                 notes: Sequence[str] = (), group: bool = True, split: str = "val") -> Comparison:
    """Compare `runs` (which include `reference`) on the task metrics all of them have; `notes` come first.

    With `group`, runs that differ only in their seed are also grouped (see `group_runs`).
    """
    shared, left_out = shared_metrics(runs, reference)
    if not shared:
        raise HydranetError(_nothing_shared(runs, reference))
    label_runs(runs)
    label_weightings(runs)
    notes = list(notes)
    for run in runs:
        left = left_out[run.path]
        if left:
            notes.append(f"{run.label}: left out, as not every run has {'it' if len(left) == 1 else 'them'}: "
                         f"{', '.join(left)}")
    zero = [f"{t}.{m}" for t, m in shared if reference.metrics[t][m] == 0]
    if zero:
        notes.append(f"left out of delta_m, the reference's value being 0: {', '.join(zero)}")
    delta: dict[Path, float] = {}
    for run in runs:
        delta[run.path], missing = _delta_m(run, reference, shared)
        if missing:
            where = "test" if split == "test" else "validation"
            notes.append(f"{run.label}: no value (NaN: no labelled {where} image, or the run diverged) for {', '.join(missing)}, "
                         "left out of its delta_m")
    for run in runs:
        notes += _run_notes(run, reference)
    ordered = list(runs)
    if sort:
        ordered.sort(key=lambda run: _best_first(delta[run.path]))
    comparison = Comparison(ordered, reference, str(epoch), shared, delta, notes, split=split)
    if group:
        _add_groups(comparison, runs, sort)  # grouped as given: --sort orders the groups, not a group's seeds
    return comparison


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


def _best_first(delta: float) -> float:
    return -delta if math.isfinite(delta) else math.inf


def _add_groups(comparison: Comparison, runs: Sequence[RunRecord], sort: bool) -> None:
    """Group `runs` (as given) by seed; only when some group has several runs (else the table stays per run)."""
    groups, notes = group_runs(runs)
    comparison.notes += notes
    if all(g.n == 1 for g in groups):
        return
    reference = next(g for g in groups if comparison.reference in g.runs)
    for g in groups:
        comparison.group_delta_m[g.path] = _delta_m(g, reference, comparison.shared)[0]
        comparison.group_run_delta_m[g.path] = [_delta_m(run, reference, comparison.shared)[0] for run in g.runs]
    if sort:  # by the Δm the table shows: the mean of the group's runs' (not the Δm on its means, which a run
        # lacking a metric can set apart from it)
        groups.sort(key=lambda g: _best_first(comparison.group_delta_m_spread(g)[0]))
    comparison.groups = groups


def group_runs(runs: Sequence[RunRecord]) -> tuple[list[RunGroup], list[str]]:
    """Runs whose specs differ only in SEED_KEYS, as groups (in the order of their first run; each group's runs in
    the order of their seeds), and notes.

    Runs of the same spec and the same seed are repeats of one run, not seeds:
    where some runs of a group share a seed, its runs are shown apart, with a note.
    """
    classes: list[list[RunRecord]] = []
    for run in runs:
        same = next((c for c in classes if set(differences(c[0].spec, run.spec, names=True)) <= set(SEED_KEYS)),
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


def _delta_m(run: RunRecord | RunGroup, reference: RunRecord | RunGroup,
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
    return (sum(means) / len(means) if means else math.nan), missing


def _run_notes(run: RunRecord, reference: RunRecord) -> list[str]:
    notes = []
    if run.epochs_done < run.epochs_planned:
        notes.append(f"{run.label} stopped after epoch {run.epochs_done} of {run.epochs_planned}; "
                     f"continue it with `hydranet train --resume {run.path}`")
    data = {key: value for key, value in differences(reference.spec, run.spec).items() if key.startswith("data.")}
    if data:
        notes.append(_other_data_note(run, reference, data))
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


def _other_data_note(run: RunRecord, reference: RunRecord, data: Mapping[str, Any]) -> str:
    """"b read other data than the reference: data.csv differs (labels.csv in a, labels_2.csv in b): the runs
    may have read different labels; its metrics and delta_m may not compare like with like".

    Each setting that differs is named with both values and what it may change: another label CSV over the
    same images differs in its labels, another split seed in its validation images, another root in its
    images; a note that said "different images" for all of them sent the user looking in the wrong place.
    """
    by_consequence: dict[str, list[str]] = {}
    for key, value in data.items():
        theirs = _setting_text(_dotted(reference.spec, key))
        by_consequence.setdefault(DATA_CONSEQUENCES.get(key, OTHER_IMAGES), []).append(
            f"{key} differs ({theirs} in {reference.label}, {_setting_text(value)} in {run.label})")
    said = "; ".join(f"{english_list(keys)}: {consequence}" for consequence, keys in by_consequence.items())
    return (f"{run.label} read other data than the reference: {said}; its metrics and delta_m may not compare "
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


def differences(reference: Mapping[str, Any], spec: Mapping[str, Any], prefix: str = "",
                names: bool = False) -> dict[str, Any]:
    """Dotted spec keys whose value in `spec` is not the reference's: key -> the run's value.

    Tasks are matched by name. A key only one side has maps to "(added)" or
    "(removed)". The weighting's and the backbone's names have their own
    columns; when a name differs, its parameters differ with it and are not
    listed, unless `names` (every difference, names included: whether two
    specs train the same thing, as a sweep asks of a folder it continues).
    Settings that change how a run trains, not what it learns
    (HOW_NOT_WHAT), are left out.
    """
    out: dict[str, Any] = {}
    for key in [*reference, *(k for k in spec if k not in reference)]:
        path = f"{prefix}{key}"
        if path in HOW_NOT_WHAT or (not names and path in ("weighting.name", "backbone.name")):
            continue
        if key not in spec or key not in reference:
            out[path] = "(added)" if key in spec else "(removed)"
            continue
        mine, theirs = spec[key], reference[key]
        if path == "tasks":
            mine, theirs = _by_task_name(mine), _by_task_name(theirs)
        if not names and path in ("weighting", "backbone") and _name(mine) != _name(theirs):
            continue
        if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            out.update(differences(theirs, mine, f"{path}.", names))
        elif mine != theirs:
            out[path] = mine
    return out


def _by_task_name(tasks: Any) -> Any:
    if not isinstance(tasks, list):
        return tasks
    return {(t.get("name") if isinstance(t, Mapping) else t): t for t in tasks}


def describe_problems(problems: Sequence[RunProblem]) -> str:
    return f"{plural(len(problems), 'folder')} cannot be compared:\n" + "\n".join(f"  {p}" for p in problems)
