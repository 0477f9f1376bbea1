"""`hydranet compare RUN [RUN ...]` and `hydranet.compare(...)`: several runs of the same tasks side by side.

A user who trained the same tasks several ways (another weighting, backbone
or setting per run) reads here which way won. This module reads the runs
from their folders: each run contributes its validation metrics at one
epoch (its best by default: the epoch best.pt holds), read from its
metrics.csv, and its cost: the median seconds of its training epochs. The
comparison itself (the metrics all runs share, each run's Δm against a
reference, seed groups, notes) is assembled by comparison.py, with the maths
in delta_m.py; compare_output.py shows it as a table, CSV or JSON.

With `split="test"` (`--split test`) each run contributes instead the
metrics its best epoch's weights scored once on its held-out test split
(`data.test_fraction`, summary.json's `test`): the numbers to report, as the
validation ones chose the epoch. Δm and grouping work the same on either.

A RUN may be a sweep folder (`hydranet train --sweep`'s), which stands for
its runs in the sweep's order, as `hydranet plot` takes it.

Whether higher is better is known to each task's metrics, not to the run
folder. A finished run's summary.json records it; otherwise the run's
spec.yaml names its tasks, so they are built again through the task
registry (this module does not import a task), and their metrics say.

`compare_runs`, `Comparison` and `RunProblem`, which the command line, the
sweep and `compare` itself take from here, are re-exported in `__all__`;
the rest of the comparison is imported from the module that defines it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hydranet.core.comparison import Comparison, TaskReference, check_reference_tasks, compare_runs
from hydranet.core.delta_m import SEED_KEYS, group_runs
from hydranet.core.errors import HydranetError, InputError
from hydranet.core.plot import CHARTS, expand_sweep_folders, series_from_rows, sweep_runs
from hydranet.core.run import FAILURE_LINE, RUN_FILES, read_metrics
from hydranet.core.run_record import RunProblem, RunRecord
from hydranet.core.spec_models import TASK_NAME, with_section_defaults
from hydranet.core.values import is_number
from hydranet.core.wording import english_list, plural

__all__ = [
    "COMPARE_CSV", "COMPARE_SPLITS", "COMPARE_TEST_CSV", "compare", "describe_problems", "in_sweep_order",
    "options_conflict",
    "metric_directions", "on_test_split", "read_run", "read_runs", "read_task_references", "recorded_directions",
    "reference_options", "train_seconds_per_epoch",
    # re-exported from the modules the comparison was split into
    "Comparison", "RunProblem", "RunRecord", "compare_runs",
]

#: The file a sweep writes beside its run folders (core/sweep.py): `hydranet compare SWEEP/*` passes over it.
COMPARE_CSV = "compare.csv"
#: The same comparison on the runs' test splits, written beside it when the sweep's runs have test metrics.
COMPARE_TEST_CSV = "compare-test.csv"

#: The parts of the data `compare --split` reads each run's metrics from.
COMPARE_SPLITS = ("val", "test")


def compare(runs: str | Path | Sequence[str | Path], *, ref: str | Path | Mapping[str, str | Path] | None = None,
            epoch: str | int = "best",
            split: str = "val", sort: bool = False, skip_bad: bool = False, group: bool = True,
            components: Any = None) -> Comparison:
    """`hydranet compare` from Python: the runs' metrics side by side and their Δm, as a Comparison.

    The arguments are the command's: `runs` are run folders, or sweep folders
    (each stands for its runs, in the sweep's order); one folder may be given
    alone. `ref` is the run the others are measured against (default: the
    first), or a mapping task -> run (or a folder of one spec's seeds, at
    their means), each task's metrics measured against its own: single-task
    baselines, `{"age": "runs/stl_age", ...}`; `epoch` "best", "last" or a number; `split` "val" or "test" (the
    held-out test split's metrics, at the best epoch); `sort` orders the rows
    by Δm, best first; `skip_bad` leaves out, with a note, the folders that
    cannot be compared instead of raising; `group=False` is `--no-group`.
    `components` are those a notebook's own task plugins were trained with
    (`hydranet.components(...)`), for a run whose tasks must be rebuilt.

    The result prints as the command's table (`print(comparison)`);
    `hydranet.core.compare_output.comparison_json` gives its --json. A
    folder that cannot be compared raises RunProblem, a HydranetError.
    """
    paths = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not paths:
        raise InputError("compare needs at least one run folder (or a sweep folder)")
    if not (epoch in ("best", "last") or (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1)):
        raise InputError(f"epoch must be 'best', 'last' or an epoch number (1, 2, ...), not {epoch!r}")
    if split not in COMPARE_SPLITS:
        raise InputError(f"split must be {english_list([repr(s) for s in COMPARE_SPLITS], 'or')}, not {split!r}")
    per_task = ref if isinstance(ref, Mapping) else None
    records, reference, skipped = read_runs(paths, None if per_task is not None else ref, epoch, skip_bad,
                                            components, split=split)
    references = []
    if per_task is not None:
        check_reference_tasks(records, per_task)
        references = read_task_references(per_task, epoch, components, split)
    return compare_runs(records, reference, epoch, sort=sort, notes=skipped, group=group, split=split,
                        task_references=references)


def reference_options(values: Sequence[str]) -> str | dict[str, str] | None:
    """The `--ref` options as given: one run (a plain `--ref RUN`), or task -> run where each names its task
    (`--ref age=runs/stl_age`); None where none is given. An InputError for several plain ones, plain and per-task
    ones together, or one task twice.

    A value is `TASK=RUN` where it starts with a task name and `=` and is not itself a folder there: a run of a
    sweep (`weighting=sum,train.seed=0`) is named so too.
    """
    plain, per_task = [], {}
    for value in values:
        name, sep, run = value.partition("=")
        if sep and TASK_NAME.fullmatch(name) and run and not Path(value).exists():
            if name in per_task:
                raise InputError(f"--ref {name}= is given twice ({per_task[name]} and {run}): give one reference "
                                 "per task (a folder of its seeds' runs for several)")
            per_task[name] = run
        else:
            plain.append(value)
    if plain and per_task:
        raise InputError(f"--ref {plain[0]} and --ref {next(iter(per_task))}={next(iter(per_task.values()))} cannot "
                         "be mixed: give one reference run for every task (--ref RUN), or one per task "
                         "(--ref TASK=RUN for each task)")
    if len(plain) > 1:
        raise InputError(f"--ref is given {len(plain)} times ({', '.join(plain)}): give one reference run, or one "
                         "per task as --ref TASK=RUN")
    return per_task or (plain[0] if plain else None)


def read_task_references(refs: Mapping[str, str | Path], epoch: str | int = "best", components: Any = None,
                         split: str = "val") -> list[TaskReference]:
    """Each task's reference, read as the compared runs are (at `epoch`, on `split`): a run folder, or a folder
    of runs of one spec that differ only in their seed, whose means are the reference (as a seed group's are)."""
    references = []
    for task, given in refs.items():
        paths = [path for path, _ in expand_sweep_folders([given])]
        try:
            runs = [read_run(path, epoch, components, split) for path in paths]
        except RunProblem as problem:
            raise RunProblem(f"the reference for {task} (--ref {task}={given}) cannot be compared: {problem}") from None
        groups, _ = group_runs(runs)
        if len(groups) > 1:
            raise RunProblem(f"the reference for {task} (--ref {task}={given}) holds runs that are not one spec's "
                             f"seeds (they differ in more than {english_list(SEED_KEYS)}, or repeat one: "
                             f"{english_list([g.runs[0].path.name for g in groups])}): name one run, or a folder "
                             "of one spec's runs of several seeds")
        references.append(TaskReference(str(task), str(given), groups[0]))
    return references


def options_conflict(epoch: str | int, split: str) -> str | None:
    """Why `epoch` and `split` cannot be asked for together, or None: `hydranet compare` checks it first, as a
    usage error (exit status 2, as for --json with --csv), not a RunProblem of a folder (exit status 1)."""
    if split == "test" and str(epoch) != "best":
        return (f"test metrics exist only for the best epoch (scored once with best.pt's weights), not epoch "
                f"{epoch}: compare the test split at the best epoch, or epoch {epoch} on the validation split "
                "(--split val)")
    return None


def read_run(path: str | Path, epoch: str | int = "best", components: Any = None, split: str = "val") -> RunRecord:
    """A run folder's spec and its validation metrics at `epoch` (best, last or a number); with `split` "test",
    the test metrics its best epoch's weights scored (summary.json's `test`), for which `epoch` must be best."""
    path = Path(path)
    conflict = options_conflict(epoch, split)
    if conflict:
        raise HydranetError(conflict)
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
    conflict = options_conflict(epoch, split)
    if conflict:  # checked before any folder is read
        raise InputError(conflict)
    unique: dict[Path, tuple[Path, bool]] = {}  # resolved -> (the path as given, whether from a sweep folder)
    for path, from_sweep in expand_sweep_folders(paths):
        # a sweep's table and charts: `SWEEP/*` names them
        if path.name in (COMPARE_CSV, COMPARE_TEST_CSV, *CHARTS) and path.is_file():
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
    read = {run.path.resolve() for run in runs}
    unlisted = [f"{run}: not in this folder's last sweep ({COMPARE_CSV}); shown as well"
                for run in _unlisted_sweep_runs(paths) if run.resolve() in read]
    return runs, reference, [f"skipped: {problem}" for problem in left_out] + unlisted


def _unlisted_sweep_runs(paths: Sequence[str | Path]) -> list[Path]:
    """The runs of the sweep folders among `paths` that their compare.csv does not list.

    A sweep folder's runs are every run folder in it: a run of an earlier sweep there whose values were since
    changed (or one not compared yet) is one of them and is shown, but named in a note, since the folder's
    compare.csv (its last sweep's table) has no row for it. A folder whose compare.csv lists nothing readable is
    not told of (nothing to tell its runs apart by).
    """
    unlisted = []
    for path in map(Path, paths):
        runs = sweep_runs(path) if (path / COMPARE_CSV).is_file() else None
        listed = _compare_csv_names(path / COMPARE_CSV) if runs else []
        if listed:
            unlisted += [run for run in runs if run.name not in listed]
    return unlisted


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


def describe_problems(problems: Sequence[RunProblem]) -> str:
    return f"{plural(len(problems), 'folder')} cannot be compared:\n" + "\n".join(f"  {p}" for p in problems)
