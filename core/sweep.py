"""`hydranet train SPEC --sweep KEY=V1,V2,...`: every combination of some spec values, one run each.

An MTL researcher compares weightings across seeds: the same spec trained
once per (weighting, seed). A sweep is that shell loop made safe: every
combination's spec is resolved before anything trains (a typo in the third
value is reported at once, not after two runs), each run is a normal run in
its own folder under the sweep folder, and running the same command again
continues it (finished runs are skipped, an interrupted one resumes with the
usual resume machinery). At the end the runs are compared as
`hydranet compare` compares them (seeds grouped) and the table is written to
the sweep folder's compare.csv. With `--nproc N` each run trains in a torchrun
launch of N processes of its own (`sweep_launch.Launcher`); the rest stays in this process.

Values are read exactly as `--set` reads one (`overrides.parse_value`): a
`--sweep KEY=V1,V2` is the runs `--set KEY=V1`, `--set KEY=V2`. A value that
holds a comma is written in the list form, a YAML flow sequence:
`--sweep 'weighting=[sum, {name: static, weights: {age: 2}}]'`.
"""

from __future__ import annotations

import gc
import itertools
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from tqdm import tqdm

from hydranet.core import yaml12
from hydranet.core.atomic import atomic_write_text
from hydranet.core.errors import HydranetError, InputError, SpecError, TrainingInterrupted
from hydranet.core.overrides import origin, override_list, parse_override_path, parse_value, value_text
from hydranet.core.sweep_naming import folder_name, named_by, run_folder
from hydranet.core.values import is_number, is_whole_number
from hydranet.core.wording import english_list, plural

if TYPE_CHECKING:
    from hydranet.core.plugins import Components
    from hydranet.core.spec import ResolvedSpec

class SweepProblem(HydranetError):
    """A sweep that cannot start (or go on); the message names the --sweep value or run folder and what to do."""


@dataclass(frozen=True)
class Axis:
    """One swept key and its values, each as `--set` text (what names the run folders)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Combination:
    """One run of the sweep: its number (from 1) and a value for each swept key."""

    number: int
    settings: tuple[tuple[str, str], ...]

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.settings]

    @property
    def label(self) -> str:
        """How the user reads it: `weighting=dwa, train.seed=1`."""
        return ", ".join(self.overrides)

    @property
    def folder(self) -> str:
        return folder_name(self.settings)


@dataclass
class PlannedRun:
    """A combination, its run folder, and what the sweep does there: train it new, resume it, or skip it."""

    combination: Combination
    path: Path
    state: str  # "new", "resume" or "finished"
    plan: Any = None  # the RunPlan to train (None for a finished run, and for a stopped one until it resumes)
    resolved: Any = None  # the combination's resolved spec


@dataclass
class SweepPlan:
    """Every run of a sweep, checked and planned before any trains."""

    out_dir: Path
    axes: list[Axis]
    runs: list[PlannedRun]
    #: how the caller names the swept values and the overrides: messages use the caller's words
    sweep_option: str = "--sweep"
    set_option: str = "--set"


@dataclass
class SweepResult:
    """What a sweep did: its folder, each run's outcome, the failures, and the comparison of its runs."""

    out_dir: Path
    outcomes: dict[int, str]  # combination number -> "trained", "resumed", "skipped" or "failed"
    failures: list[tuple[Combination, str]] = field(default_factory=list)
    comparison: Any = None  # a compare.Comparison; None when no run finished an epoch
    compare_csv: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: the same comparison on the runs' test splits (data.test_fraction > 0), and its compare-test.csv; None
    #: where the runs have no test split
    test_comparison: Any = None
    test_csv: Path | None = None

    def __repr__(self) -> str:
        """SweepResult('runs/s', 4 runs: 3 trained, 1 failed; compare.csv): what a notebook shows at a glance.

        The dataclass's own repr printed every run's comparison record, whole
        specs included: some ten thousand characters for a small sweep.
        """
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        done = ", ".join(f"{count} {outcome}" for outcome, count in counts.items())
        parts = [f"{plural(len(self.outcomes), 'run')}" + (f": {done}" if done else "")]
        if self.failures:
            parts.append("failed: " + ", ".join(combo.label for combo, _ in self.failures))
        if self.compare_csv is not None:
            parts.append(f"compared in {self.compare_csv.name}" + (f" and {self.test_csv.name}" if self.test_csv else ""))
        return f"SweepResult({str(self.out_dir)!r}, {'; '.join(parts)})"


# ------------------------------------------------------------------ the values


def parse_sweeps(sweeps: Iterable[str], option: str = "--sweep") -> list[Axis]:
    """`KEY=V1,V2,...` (or `KEY=[V1, V2]`) strings as axes; every problem reported at once, named as `option`."""
    axes: list[Axis] = []
    problems, keys = [], []
    for text in sweeps:
        key, sep, values = text.partition("=")
        key = key.strip()
        keys.append(key)
        try:
            if not sep or not key:
                raise ValueError(f"not of the form KEY=V1,V2,... (e.g. {option} train.seed=0,1,2)")
            axes.append(Axis(key, tuple(split_values(values, option))))
        except ValueError as error:
            problems.append(f"{origin(option, text)}: {error}")
    problems += _key_problems([k for k in keys if k], option)
    if problems:
        raise SweepProblem("\n".join(problems))
    return axes


def axes_from_mapping(values: Mapping[str, Any], option: str = "values") -> list[Axis]:
    """The Python API's {key: [value, ...]} as axes: each value written as `--set` text (`value_text`).

    A string is read as the command line reads it ("sum,dwa" is two values); so
    is a list of strings, each one value as given.
    """
    if not isinstance(values, Mapping) or not values:
        raise InputError(f"{option} maps each swept key to its values, e.g. "
                         f"{{'weighting': ['sum', 'dwa'], 'train.seed': [0, 1]}}; got {values!r}")
    axes = []
    for key, given in values.items():
        if isinstance(given, str):
            axes.append(Axis(str(key), tuple(split_values(given, option))))
        elif isinstance(given, Sequence) and given:
            axes.append(Axis(str(key), tuple(value_text(v) for v in given)))
        else:
            raise InputError(f"{option}[{key!r}] must be a non-empty list of values (e.g. [0, 1]); got {given!r}")
    problems = _key_problems([axis.key for axis in axes], option)
    if problems:
        raise InputError("\n".join(problems))
    return axes


def split_values(text: str, option: str = "--sweep") -> list[str]:
    """One --sweep's values, each as `--set` text: split at commas, or a YAML flow list `[a, {b: c}]`.

    Each value is parsed here as --set parses it, so that a value cut at a comma
    it holds (`{name: static, weights: {age: 2, gender: 1}}`) is reported with
    the form that takes it, before any run starts.
    """
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            listed = parse_value(stripped)
        except yaml.YAMLError as error:
            raise ValueError(f"the list of values is {yaml12.error_message(error, stripped)}") from None
        if not listed:
            raise ValueError("the list of values is empty")
        values = [value_text(value) for value in listed]
    else:
        values = [piece.strip() for piece in text.split(",")]
        for piece in values:
            if not piece:
                raise ValueError("an empty value (two commas together, or one at an end); to sweep over the "
                                 "empty string, write the list form: KEY=['', x]")
            try:
                parse_value(piece)
            except yaml.YAMLError as error:
                raise ValueError(f"the value is {yaml12.error_message(error, piece)}; a value holding a comma is "
                                 f"written in the list form: {option} 'KEY=[v1, {{a: 1, b: 2}}]'") from None
    twice = sorted({value for value in values if values.count(value) > 1})
    if twice:
        raise ValueError(f"{english_list(twice)} listed twice; each value once")
    return values


def _key_problems(keys: Sequence[str], option: str) -> list[str]:
    """A key swept twice, or one that is not a spec path."""
    problems = []
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        problems.append(f"{option} {key}: swept twice; give all its values in one {option} {key}=V1,V2")
    for key in dict.fromkeys(keys):
        try:
            parse_override_path(key)
        except ValueError as error:
            problems.append(f"{option} {key}: {error}")
    return problems


def combinations(axes: Sequence[Axis]) -> list[Combination]:
    """Every combination of the axes' values, the last axis varying fastest (as nested loops would)."""
    product = itertools.product(*[[(axis.key, value) for value in axis.values] for axis in axes])
    return [Combination(number, tuple(settings)) for number, settings in enumerate(product, start=1)]


# ------------------------------------------------------------------ planning


def plan_sweep(spec: Any, axes: Sequence[Axis], *, overrides: str | Iterable[str] = (),
               out_dir: str | Path | None = None, components: Any = None, set_option: str = "--set",
               sweep_option: str = "--sweep", nproc: int = 1) -> SweepPlan:
    """Resolve every combination's spec and look at its run folder, before any run trains.

    Every problem is reported at once, each naming its combinations: a spec
    value that does not resolve, a global batch that does not split among
    `nproc` processes (each run then trains as `train --nproc` would), or a
    run folder holding a run of another spec than the sweep now asks for.
    """
    from hydranet.core.distributed import DistributedError
    from hydranet.core.run import default_run_dir

    overrides = override_list(overrides, set_option)
    refuse_set_and_swept(axes, overrides, set_option, sweep_option)
    root = Path(out_dir) if out_dir is not None else default_run_dir(f"{_spec_name(spec)}-sweep")
    _refuse_run_folder(root)
    _refuse_another_sweep(root, axes, sweep_option)
    combos = combinations(axes)
    runs, spec_problems, folder_problems = [], {}, []
    for combo in combos:
        try:
            resolved = _resolve(spec, combo, overrides, components, set_option, sweep_option)
            _check_processes(resolved, nproc, axes, sweep_option, set_option)
            run = _plan_folder(combo, run_folder(root, combo), resolved, components, set_option)
        except (SpecError, DistributedError) as error:
            spec_problems.setdefault(str(error), []).append(combo)
            continue
        except HydranetError as error:
            folder_problems.append(f"{_run_name(combo, len(combos))}: {error}")
            continue
        runs.append(run)
    problems = [f"{english_list([_run_name(c, len(combos)) for c in combos_])}: {message}"
                for message, combos_ in spec_problems.items()] + folder_problems
    if problems:
        bad = sum(map(len, spec_problems.values())) + len(folder_problems)
        raise SweepProblem(f"{bad} of the sweep's {plural(len(combos), 'run')} cannot start, so none was started:\n"
                           + "\n".join(textwrap.indent(problem, "    ")[2:] for problem in problems))
    return SweepPlan(root, list(axes), runs, sweep_option, set_option)


def _check_processes(resolved: Any, nproc: int, axes: Sequence[Axis], sweep_option: str, set_option: str) -> None:
    """Each run's processes must fit the machine's GPUs, split its global batch evenly and add up its tasks'
    metrics: refused before any run starts, where `train --nproc` would refuse it only when that run's turn came."""
    if nproc <= 1:
        return
    from hydranet.core.distributed import DistributedError, check_global_batch, check_process_count

    check_process_count(nproc, resolved.spec.train.device, option="--nproc" if set_option.startswith("-") else "nproc")
    try:
        check_global_batch(resolved.spec.train.batch_size, nproc)
    except DistributedError as error:
        swept = any(axis.key == "train.batch_size" for axis in axes)  # a --set of it would be refused as swept
        where = f"in {sweep_option} train.batch_size=..." if swept else f"{set_option} train.batch_size=N"
        raise DistributedError(str(error).replace("(--set train.batch_size=N)", f"({where})")) from None
    from hydranet.core.metrics import refuse_unsummed_metrics

    try:  # a metric that cannot be added up over processes (auc): as train --nproc refuses it
        refuse_unsummed_metrics(resolved.build_tasks(), nproc)
    except HydranetError as error:
        raise DistributedError(str(error)) from None


def _refuse_run_folder(root: Path) -> None:
    """A sweep folder that is a file, or a run folder: the runs would be buried among another run's files, and
    `hydranet plot` and `compare` would take the folder for that one run."""
    if root.exists() and not root.is_dir():
        raise SweepProblem(f"{root} is a file; give the sweep a folder (a new one, or an earlier sweep's to "
                           "continue it)")
    held = [name for name in ("spec.yaml", "metrics.csv") if (root / name).is_file()]
    if held:
        raise SweepProblem(f"{root} is a run folder (it holds {held[0]}), not a sweep folder: a sweep puts each "
                           "run in a folder of its own under the one it is given. Give the sweep a new folder "
                           "(or an earlier sweep's, to continue it)")


def _refuse_another_sweep(root: Path, axes: Sequence[Axis], sweep_option: str) -> None:
    """A sweep folder holding the runs of a sweep of other keys: this one's runs would sit among them and its
    compare.csv replace theirs, which would then list this sweep's runs alone.

    A sweep records its keys in its runs' folder names (`folder_name`), so a run
    folder named by other keys is another sweep's. The same keys with other
    values (one added, one left out, another order) are the same sweep, continued.
    """
    if not root.is_dir():
        return
    keys = [axis.key for axis in axes]
    others = sorted(run.name for run in root.iterdir()
                    if (run / "spec.yaml").is_file() and not named_by(run.name, keys))
    if not others:
        return
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    out = "--out" if sweep_option.startswith("-") else "out_dir="
    raise SweepProblem(f"{root} holds the runs of another sweep ({shown}), not of one over {english_list(keys)}: "
                       f"this sweep's runs would be mixed with them and its compare.csv would replace theirs. Give "
                       f"this sweep another folder with {out} (to continue that sweep, sweep the keys it swept)")


def _spec_name(spec: Any) -> str:
    """What names the default sweep folder: the spec file's or built-in spec's name ("demo" for none)."""
    from hydranet.core.run import run_name

    if spec is None:
        return "demo"
    source = getattr(spec, "source", spec)
    return run_name(str(source)) if isinstance(source, (str, Path)) else "run"


def refuse_set_and_swept(axes: Sequence[Axis], overrides: Sequence[str], set_option: str, sweep_option: str) -> None:
    """A key both set and swept: the sweep's value would silently win over the --set one."""
    swept = {axis.key for axis in axes}
    both = [o for o in overrides if o.partition("=")[0].strip() in swept]
    if both:
        raise SweepProblem(f"{english_list([origin(set_option, o) for o in both])} "
                           f"{'is' if len(both) == 1 else 'are'} also swept by {sweep_option}; give "
                           f"{'its' if len(both) == 1 else 'their'} values in {sweep_option} only")


def _resolve(spec: Any, combo: Combination, overrides: Sequence[str], components: Any, set_option: str,
             sweep_option: str) -> Any:
    """The combination's resolved spec; a problem a swept value caused names it as the sweep's, not as a --set."""
    from hydranet.core.spec import load_spec

    try:
        return load_spec("demo" if spec is None else spec, [*overrides, *combo.overrides], components,
                         option=set_option)
    except SpecError as error:
        swaps = [(f"(from {origin(set_option, o)})", f"(from {origin(sweep_option, o)})") for o in combo.overrides]

        def renamed(path: str) -> str:
            for mine, theirs in swaps:
                path = path.replace(mine, theirs)
            return path

        raise SpecError([(renamed(path), message) for path, message in error.problems], error.source) from None


def _plan_folder(combo: Combination, path: Path, resolved: Any, components: Any, set_option: str,
                 keep: bool = False) -> PlannedRun:
    """What to do in the combination's folder: skip a finished run, resume a stopped one, or start one.

    A folder holding a run of another spec is refused: continuing it would mix
    two experiments under one name. Called when the sweep is planned (every
    problem up front) and again just before the run trains (`keep`): by then
    another sweep into the same folder may have trained or stopped it.
    """
    from hydranet.core.planning import plan_run

    if (path / "spec.yaml").is_file():
        changed = spec_changes(path, resolved)
        if changed:
            raise SweepProblem(
                f"{path} holds a run of another spec than this sweep asks for ({changed}); it was made with other "
                f"{set_option} values or by another command. Move or delete that folder, or give the sweep "
                "another --out")
        if (path / "summary.json").is_file():
            return PlannedRun(combo, path, "finished", resolved=resolved)
        if (path / "last.pt").is_file():
            plan = plan_run(resume=path, components=components, option=set_option)
            # kept only when it trains next: a resume plan holds the whole checkpoint
            return PlannedRun(combo, path, "resume", plan if keep else None, resolved)
    return PlannedRun(combo, path, "new", plan_run(resolved, out_dir=path, components=components,
                                                   option=set_option), resolved)


def spec_changes(path: Path, resolved: Any) -> str:
    """How the spec a run folder holds differs from `resolved` ("" if it does not), as `key=theirs (ours)`."""
    from hydranet.core.spec_differences import differences
    from hydranet.core.spec_models import with_section_defaults

    try:
        saved = yaml.safe_load((path / "spec.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SweepProblem(f"cannot read {path / 'spec.yaml'} ({error}); move or delete that folder") from None
    wanted = yaml.safe_load(resolved.to_yaml())  # as spec.yaml would hold it
    if not isinstance(saved, dict):
        return "its spec.yaml is not a spec"
    saved = with_section_defaults(saved)  # a run written before a key was added trained with its default
    theirs = differences(wanted, saved, names=True)
    ours = differences(saved, wanted, names=True)
    return ", ".join(f"{key}={value} there, {ours.get(key, '(removed)')} now" for key, value in theirs.items())


def _run_name(combo: Combination, total: int) -> str:
    return f"run {combo.number}/{total} ({combo.label})"


# ------------------------------------------------------------------ running


def run_sweep(plan: SweepPlan, *, components: Any = None, progress: bool | None = None, echo: bool = True,
              again: str | None = None, train_run: Callable[[PlannedRun], Any] | None = None,
              alone: str = "a --resume of this run alone", continue_with: str | None = None) -> SweepResult:
    """Train the planned runs one after the other, then compare them and write compare.csv.

    A run that fails is reported and the sweep goes on; the result lists it.
    Ctrl-C (or SIGTERM) stops the sweep once the current run has saved, and
    says how to continue: "run `again`", the command that runs this sweep again (or `continue_with`, the
    whole advice, as the Python API words it), rather than `alone`, resuming the stopped run by itself, which
    the run's own message suggests. A stop in a run's loop is raised again as a `TrainingInterrupted` that
    says this: a caller in Python sees only the exception.

    `train_run` trains one run elsewhere than in this process (a `Launcher`:
    torchrun with N processes) and returns what it says of it (`best_epoch`,
    `run_dir`); it raises `TrainingInterrupted` when a signal stopped the run,
    any other error when the run failed. A stopped run it is given has no
    `plan` (its processes load the checkpoint; this one need not hold it
    meanwhile). Skipping, resuming, the reports and the comparison are the
    same either way.
    """
    from hydranet.core.engine import run_plan

    def in_process(run: PlannedRun) -> Any:
        return run_plan(run.plan, components=components, progress=progress, echo=echo)

    train = train_run or in_process
    say = _sayer(echo)
    total = len(plan.runs)
    continue_with = continue_with or f"run {again or f'the same sweep again, into {plan.out_dir}'}"
    result = SweepResult(plan.out_dir, {})
    say(f"sweep of {plural(total, 'run')} in {plan.out_dir}: "
        + " x ".join(f"{axis.key} ({', '.join(axis.values)})" for axis in plan.axes))
    for run in plan.runs:
        head = f"run {run.combination.number}/{total}: {run.combination.label}"
        if run.state == "finished":
            say(f"{head}: finished already in {run.path}, skipped")
            result.outcomes[run.combination.number] = "skipped"
            continue
        # the run before (finished or failed) is held by reference cycles until the cyclic collector comes round:
        # free its model, optimizer and images (GPU memory) before this run measures free memory and places its own
        gc.collect()
        try:
            run = _plan_folder(run.combination, run.path, run.resolved, components, plan.set_option,
                               keep=train_run is None)
            if run.state == "finished":
                say(f"{head}: finished meanwhile in {run.path} (by another sweep or command), skipped")
                result.outcomes[run.combination.number] = "skipped"
                continue
            say(head + (" (resuming its stopped run from its last.pt)" if run.state == "resume" else ""))
            trained = train(run)
        except (TrainingInterrupted, KeyboardInterrupt) as stop:  # a stop in the loop, or Ctrl-C while a run set up
            advice = (f"To continue it (this run, then the rest), {continue_with}; {alone} would not train the "
                      "rest, nor compare them")
            say(f"sweep stopped at run {run.combination.number}/{total}. {advice}")
            if isinstance(stop, TrainingInterrupted):  # its own message says to resume this run alone
                raise TrainingInterrupted(f"sweep stopped at run {run.combination.number}/{total}, its progress "
                                          f"saved in {run.path / 'last.pt'}. {advice}", stop.signum) from stop
            raise
        except Exception as error:  # hydranet's own, torch's (out of memory, ...), a plugin's: the next run may work
            message = str(error) if isinstance(error, HydranetError) else f"{type(error).__name__}: {error}"
            say(f"run {run.combination.number}/{total} failed: {message}")
            result.failures.append((run.combination, message))
            result.outcomes[run.combination.number] = "failed"
            continue
        result.outcomes[run.combination.number] = "resumed" if run.state == "resume" else "trained"
        say(f"run {run.combination.number}/{total} done: best epoch {trained.best_epoch}, in {trained.run_dir}")
    _compare(plan, result, components)
    return result


def _sayer(echo: bool) -> Callable[[str], None]:
    """The sweep's own lines go where the runs' log lines go: stderr, above any progress bar."""
    def say(line: str) -> None:
        if echo:
            tqdm.write(line, file=sys.stderr)
    return say


def _compare(plan: SweepPlan, result: SweepResult, components: Any) -> None:
    """Compare the sweep's runs (seeds grouped, the first run the reference) and write compare.csv; when they
    held out a test split, the same on it in compare-test.csv: the numbers to report, compare.csv's validation
    metrics having chosen each run's epoch.

    A failed run is left out: the failure report says why, where a note would only say it has no epoch.
    """
    from hydranet.core.compare import COMPARE_CSV, COMPARE_TEST_CSV, RunProblem, on_test_split, read_runs

    failed = {combo.number for combo, _ in result.failures}  # the failure report names them
    paths = [run.path for run in plan.runs
             if run.combination.number not in failed and (run.path / "spec.yaml").is_file()]
    if not paths:
        result.notes.append("nothing to compare: " + ("every run of the sweep failed" if failed
                                                       else "no run of the sweep wrote a run folder"))
        return
    try:  # in the sweep's order (its first run the reference), not an earlier compare.csv's
        records, reference, skipped = read_runs(paths, skip_bad=True, components=components, as_given=True)
    except RunProblem as problem:
        result.notes.append(f"nothing to compare: {problem}")
        return
    result.comparison, result.compare_csv = _write_comparison(plan.out_dir / COMPARE_CSV, records, reference,
                                                              skipped, "val")
    if not any(_test_fraction(record.spec) > 0 for record in records):
        return
    try:  # the runs as read above: their summary.json holds the test metrics too
        tested, reference, skipped = on_test_split(records)
    except RunProblem as problem:
        result.notes.append(f"no test comparison: {problem}")
        return
    result.test_comparison, result.test_csv = _write_comparison(plan.out_dir / COMPARE_TEST_CSV, tested, reference,
                                                                skipped, "test")
    result.notes.append(f"wrote {result.test_csv}: the same comparison on the runs' held-out test splits "
                        f"(report these; `hydranet compare {plan.out_dir} --split test` shows it)")


def _write_comparison(target: Path, records: list[Any], reference: Any, skipped: list[str],
                      split: str) -> tuple[Any, Path]:
    """Compare the runs on `split` and write the table to `target`: (the comparison, target)."""
    from hydranet.core.compare import compare_runs
    from hydranet.core.compare_output import comparison_csv

    comparison = compare_runs(records, reference, notes=skipped, split=split)
    return comparison, atomic_write_text(target, comparison_csv(comparison))


def _test_fraction(spec: Any) -> float:
    data = spec.get("data") if isinstance(spec, dict) else None
    value = data.get("test_fraction", 0) if isinstance(data, dict) else 0
    return float(value) if is_number(value) else 0.0


def failure_report(result: SweepResult, total: int) -> str:
    """The failed runs, each with why, and how to try them again."""
    lines = [f"{len(result.failures)} of the sweep's {plural(total, 'run')} failed:"]
    lines += [f"  {_run_name(combo, total)}: {message}" for combo, message in result.failures]
    lines.append(f"Their folders are under {result.out_dir} (train.log says more). The same command again skips "
                 "the finished runs and resumes each failed one from its last.pt (where it has one): that helps "
                 "where the cause was outside the spec (memory, a file). Where it was a value of the spec (a "
                 "train.lr too high), the run fails again: leave that value out of the sweep, or move the failed "
                 "runs' folders away before changing a --set (a run folder of another spec is refused).")
    return "\n".join(lines)


# ------------------------------------------------------------------ the Python API


def sweep(spec: ResolvedSpec | str | Path | Mapping[str, Any] | None, values: Mapping[str, Any], *,
          overrides: str | Iterable[str] = (), out_dir: str | Path | None = None,
          components: Components | None = None, progress: bool | None = None, echo: bool = True,
          nproc: int = 1) -> SweepResult:
    """Train every combination of `values` (`{"weighting": ["sum", "dwa"], "train.seed": [0, 1]}`), one run each.

    As `hydranet train SPEC --sweep KEY=V1,V2 ...`: `overrides` apply to every
    run, the runs go in folders under `out_dir` (default
    runs/<spec>-sweep-<time>), calling it again with the same `out_dir`
    continues the sweep, and the result holds the comparison of the runs
    (also written to `out_dir`/compare.csv). A failed run does not raise:
    `result.failures` lists it.

    With `nproc` N > 1 each run trains as `--sweep ... --nproc N` trains it
    (the same `sweep_launch.Launcher`): a torchrun launch of N processes,
    which load the spec themselves, so `spec` is then a spec file or a
    built-in spec's name, and the installed plugins are theirs (no
    `components`). Each run's global batch must split among the N; every
    combination is checked before any run starts.
    """
    _check_nproc(nproc, spec, components)
    axes = axes_from_mapping(values)
    plan = plan_sweep(spec, axes, overrides=overrides, out_dir=out_dir, components=components,
                      set_option="overrides", sweep_option="values", nproc=nproc)
    again = f"call hydranet.sweep again with the same out_dir ({str(plan.out_dir)!r})"
    launcher = None
    if nproc > 1:
        from hydranet.core.sweep_launch import Launcher

        launcher = Launcher(nproc, None if spec is None else str(spec),
                            tuple(override_list(overrides, "overrides")), progress)
    return run_sweep(plan, components=components, progress=progress, echo=echo, continue_with=again,
                     train_run=launcher, alone="hydranet.train(resume=...) of this run alone")


def _check_nproc(nproc: Any, spec: Any, components: Any) -> None:
    """`nproc` is a whole number from 1; above 1 the launched processes must be able to load the spec and the
    plugins themselves, from the command line `Launcher` gives them."""
    if not is_whole_number(nproc) or nproc < 1:
        raise InputError(f"nproc is the number of processes each run trains with, a whole number from 1; got "
                         f"{nproc!r}")
    if nproc == 1:
        return
    if spec is not None and not isinstance(spec, (str, Path)):
        raise InputError(f"nproc={nproc} starts each run's processes with the spec on their command line, so "
                         f"spec is a spec file's path or a built-in spec's name, not a {type(spec).__name__}: "
                         "write it to a YAML file and pass its path (or leave nproc at 1)")
    if components is not None:
        raise InputError(f"nproc={nproc} starts each run's processes apart from this one, and they load the "
                         "installed plugins, not the given components: leave components out (or nproc at 1)")
