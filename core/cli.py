"""The `hydranet` command line (click).

Every command turns a `HydranetError` into a one-paragraph message without a
traceback: the message already names the file, field, plugin or task at fault.
`hydranet --traceback` (or HYDRANET_TRACEBACK=1) prints the whole traceback
too; without it, an error raised in plugin code ends with a hint to use it.
Plugins add commands through the `register_commands` hook.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from hydranet.core.cli_options import SET_HELP, HintingCommand, device_option, pick_device_option
from hydranet.core.cli_types import SpecHintingCommand, check_overrides, group_option_hint
from hydranet.core.option_types import Count
from hydranet.core.errors import TRACEBACK_ENV, HydranetError, TrainingInterrupted
from hydranet.core.launch import error_prefix, error_printed, is_main_rank


class HydranetGroup(click.Group):
    """Adds plugin commands on first use and prints HydranetErrors as plain messages.

    Listing the commands (`hydranet --help`, `hydranet CMD --help`, shell
    completion) imports no torch: core/plugin_commands.py lists the plugin
    commands from the plugins that add them.
    """

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self._plugins_added:
            self._plugins_added = True
            from hydranet.core.plugin_commands import add_plugin_commands

            add_plugin_commands(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._add_plugin_commands()
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        from hydranet.core.interrupts import StoppedAtOnce

        before = os.environ.get(TRACEBACK_ENV)  # `--traceback` sets it for this command (and its launches)
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as error:  # `hydranet train --traceback`: say where --traceback goes
            raise group_option_hint(error) or error from None
        except TrainingInterrupted as error:
            # the run has said why it stopped and how to resume (train.log and the console), once
            ctx.exit(128 + int(error.signum))  # the shell's convention for "stopped by signal N"
        except StoppedAtOnce:  # a second Ctrl-C: the run has said what it kept
            ctx.exit(128 + signal.SIGINT)
        except KeyboardInterrupt:  # Ctrl-C outside a training loop: nothing of the command's work is kept
            stopped_by_ctrl_c()
        except HydranetError as error:
            # under torchrun every rank usually fails alike: the error is printed once (core/launch.py)
            message = str(error)
            prefix = error_prefix(message)
            if prefix is None:  # rank 0 said the same
                ctx.exit(1)
            echo_error(error, f"{prefix}Error: {message}")
            error_printed(message)
            ctx.exit(1)
        finally:
            if before is None:
                os.environ.pop(TRACEBACK_ENV, None)
            else:
                os.environ[TRACEBACK_ENV] = before


def echo_error(error: BaseException, line: str) -> None:
    """Print an error's message (`line`) to stderr: after its whole traceback, and that of what plugin code
    raised that the message tells of, where tracebacks are wanted; else with a hint to ask for them when
    plugin code raised it (`hydranet.core.errors.raised_in`)."""
    from hydranet.core.errors import TRACEBACK_HINT, raised_in, traceback_text, wants_traceback

    raised = raised_in(line)
    if wants_traceback():
        chained, cause = set(), error  # what the error's own traceback shows already
        while cause is not None and id(cause) not in chained:
            chained.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        for words, exception in raised:
            if exception is not None and id(exception) not in chained:
                click.echo(f"plugin code raised {words}:\n" + traceback_text(exception), err=True)
        click.echo(traceback_text(error), err=True)
    click.echo(line, err=True)
    if raised and not wants_traceback():
        click.echo(TRACEBACK_HINT, err=True)


def _version() -> str:
    from hydranet import __version__

    return __version__


@click.group(cls=HydranetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="hydranet")
@click.option("--traceback", "show_traceback", is_flag=True,
              help=f"Print the whole traceback of an error (and of what plugin code raised), not only its "
                   f"message; the same as {TRACEBACK_ENV}=1. Give it before the command: hydranet --traceback "
                   f"train ...")
def cli(show_traceback: bool) -> None:
    """hydranet: multi-task learning with one backbone and a head per task.

    \b
    Quick start:
      hydranet train                      # the built-in demo (synthetic faces, CPU-friendly)
      hydranet train specs/utkface.yaml --set data.root=data/UTKFace
      hydranet list weightings
      hydranet list weightings dwa        # one component: its plugin and parameters
      hydranet --traceback train my.yaml  # an error with its whole traceback
    """
    if show_traceback:
        os.environ[TRACEBACK_ENV] = "1"  # read where the error is worded and printed, and by launched processes


#: the folder of hydranet's own modules: a warning raised there is one of its messages to the user
_OWN_CODE = str(Path(__file__).resolve().parents[1])


def _show_own_warnings_as_lines() -> None:
    """hydranet's own UserWarnings (a relative HYDRANET_CACHE, say) on the command line read as its other warnings
    do, "warning: MESSAGE" on stderr, not Python's "FILE:LINE: UserWarning: MESSAGE" and a line of its source.

    Others' warnings (torch's, a plugin's) keep Python's form: where they come from is part of what they say.
    Installed by the console script (`main`) alone: the Python API, and `cli` invoked by a test runner that
    records warnings, leave `warnings` as the caller set it.
    """
    shown = warnings.showwarning
    if getattr(shown, "_hydranet_lines", False):
        return

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(_OWN_CODE):
            click.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    show._hydranet_lines = True  # type: ignore[attr-defined]
    warnings.showwarning = show


# ------------------------------------------------------------------ train


@cli.command(cls=SpecHintingCommand, spec_sections=None)
@click.argument("spec", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP, callback=check_overrides)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run folder (default: runs/<spec>-<time>).")
@click.option("--resume", "resume", type=click.Path(), metavar="RUN_DIR",
              help="Continue a stopped run from RUN_DIR/last.pt (its spec, weights, optimizer, data order, RNG).")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2,...",
              help="Train one run per combination of the values (repeatable: every combination, the last "
                   "--sweep varying fastest), each in its own folder under --out (default: "
                   "runs/<spec>-sweep-<time>), then compare them (seeds grouped) into --out/compare.csv. Values "
                   "are read as --set reads them; a value holding a comma goes in the list form, "
                   "KEY='[v1, {a: 1, b: 2}]'. The same command again continues the sweep. With --nproc, "
                   "each run is its own launch of N processes.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on in a terminal).")
@click.option("--nproc", type=Count(1), default=1, show_default=True,
              help="Train with N processes on this machine (one per GPU; gloo on CPU): runs torchrun for you "
                   "(with --sweep, once per run).")
@device_option("train on", default=None,
               more="Short for --set train.device=DEVICE: auto, cpu, cuda, cuda:N or mps (default: the spec's "
                    "train.device).")
def train(spec: str | None, overrides: tuple[str, ...], out_dir: str | None, resume: str | None,
          sweeps: tuple[str, ...], progress: bool | None, nproc: int, device: str | None) -> None:
    """Train the model a SPEC describes (default: the built-in demo).

    SPEC is a YAML or TOML spec file, or the name of a built-in spec (demo,
    utkface). The run folder receives the resolved spec, metrics.csv,
    train.log, last.pt and best.pt. Ctrl-C (or SIGTERM) finishes the current
    step (or validation), saves, and prints the command that resumes; a second
    Ctrl-C stops at once, without saving (exit status 130).

    \b
    Examples:
      hydranet train
      hydranet train specs/utkface.yaml --set data.root=data/UTKFace --set train.epochs=20
      hydranet train my.yaml --set weighting=dwa --out runs/dwa
      hydranet train my.yaml --device cpu
      hydranet train --resume runs/dwa
      hydranet train my.yaml --nproc 4
      torchrun --nproc-per-node 8 -m hydranet train my.yaml
      hydranet train my.yaml --sweep weighting=sum,dwa --sweep train.seed=0,1,2 --out runs/w
      hydranet train my.yaml --sweep weighting=sum,dwa --nproc 4 --out runs/w4
    """
    from hydranet.core.engine import plan_run, resume_conflict, run_plan
    from hydranet.core.report import final_report, metrics_table, test_report

    problem = resume and resume_conflict("--resume", resume, {"SPEC": spec, "--set": overrides, "--out": out_dir,
                                                             "--device": device, "--sweep": sweeps})
    if problem:
        raise click.UsageError(problem)
    given = overrides
    if device is not None:
        if any(o.partition("=")[0].strip() == "train.device" for o in overrides):
            raise click.UsageError("--device is short for --set train.device=DEVICE; give one of the two, not both")
        pick_device_option(device)  # named as --device, present on this machine: checked before any data loads
        overrides = (*overrides, f"train.device={device}")
    if sweeps:
        _train_sweep(spec, sweeps, overrides, given, out_dir, device, progress, nproc)
        return
    # what the run (or every process of it) would refuse, refused before any data or model is loaded
    plan = plan_run(spec, overrides=overrides, out_dir=out_dir, resume=resume, option="--set")
    if nproc > 1:
        from hydranet.core.distributed import check_global_batch, launch_local
        from hydranet.core.metrics import refuse_unsummed_metrics

        check_global_batch(plan.spec.spec.train.batch_size, nproc)
        refuse_unsummed_metrics(plan.spec.build_tasks(), nproc)
        raise SystemExit(launch_local(nproc, _argv_without_nproc(sys.argv[1:]), device=plan.spec.spec.train.device))
    result = run_plan(plan, progress=progress)  # None: bars when stderr is a terminal
    if not result.is_main:  # another rank of a distributed run: rank 0 reports
        return
    # a run completed on resume (every epoch in last.pt, summary.json missing) whose metrics.csv was lost has no
    # history to read its last epoch from: it trained them all
    last = result.history[-1]["epoch"] if result.history else plan.spec.spec.train.epochs
    heading, metrics = final_report(last, result.best_epoch, result.best,
                                    result.final.metrics, validated=result.val_images > 0, monitor=result.monitor)
    if result.stopped_early:
        heading += f", the run having stopped early after epoch {last} (train.patience)"
    click.echo(f"\n{heading}; baseline = best constant prediction:")
    click.echo(metrics_table(metrics, result.baselines, result.final.higher_is_better))
    test_note = test_report(result)
    if test_note:
        click.echo(f"\n{test_note}")
    click.echo(f"\nrun folder: {result.run_dir}")


def _train_sweep(spec: str | None, sweeps: tuple[str, ...], overrides: tuple[str, ...], given: tuple[str, ...],
                 out_dir: str | None, device: str | None, progress: bool | None, nproc: int) -> None:
    """`train --sweep`: plan every combination (all problems at once), train them in turn, print the comparison.

    With --nproc N each run is its own torchrun launch of N processes (a process group lives as long as its
    processes), one after another; planning, skipping, the reports and the comparison stay in this process.
    `given` are the --set overrides as typed (without --device's), for the command that continues the sweep.
    """
    from hydranet.core.compare_output import comparison_table
    from hydranet.core.sweep import (SweepProblem, failure_report, parse_sweeps, plan_sweep, refuse_set_and_swept,
                                     run_sweep)
    from hydranet.core.sweep_launch import Launcher

    try:  # how the command was called: a --sweep without values, a key both --set and swept
        axes = parse_sweeps(sweeps)
        refuse_set_and_swept(axes, overrides, "--set", "--sweep")
    except SweepProblem as error:
        raise click.UsageError(str(error)) from None
    plan = plan_sweep(spec, axes, overrides=overrides, out_dir=out_dir, nproc=nproc)
    again = shlex.join(["hydranet", "train", *([spec] if spec else []), *_pairs("--set", given),
                        *_pairs("--sweep", sweeps), *(["--device", device] if device else []),
                        *(["--nproc", str(nproc)] if nproc > 1 else []), "--out", str(plan.out_dir)])
    launcher = Launcher(nproc, spec, overrides, progress) if nproc > 1 else None
    result = run_sweep(plan, progress=progress, again=again, train_run=launcher)
    if result.comparison is not None:
        click.echo("\n" + comparison_table(result.comparison))
        click.echo(f"\nwrote {result.compare_csv}")
    for note in result.notes:
        click.echo(note, err=True)
    click.echo(f"sweep folder: {plan.out_dir}")
    if result.failures:
        raise HydranetError(failure_report(result, len(plan.runs)))


def _pairs(option: str, values: tuple[str, ...]) -> list[str]:
    """`--set a=1 --set b=2`: each value after its option again, for a command to print."""
    return [part for value in values for part in (option, value)]


def _argv_without_nproc(argv: list[str]) -> list[str]:
    """The command line again, less --nproc, for the worker processes torchrun starts."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


# ------------------------------------------------------------------ plot


@cli.command(cls=HintingCommand, short_help="Write PNG charts of one run's or several runs' metrics.")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Folder for the PNGs (default: RUN for one run, the sweep folder for a sweep; several runs "
                   "need it).")
@click.option("--no-group", is_flag=True, help="One line per run, even for runs that differ only in train.seed.")
@click.option("--skip-bad", is_flag=True,
              help="Leave out, with a note, the folders that are not runs or have no finished epoch, instead of "
                   "stopping (a sweep folder's runs always are).")
def plot(runs: tuple[str, ...], out_dir: str | None, no_group: bool, skip_bad: bool) -> None:
    """Write PNG charts of runs' metrics.csv: one run's, or several runs side by side.

    losses.png (each task's training and validation loss), metrics.png (each
    task's validation metrics) and weights.png (each task's weight), over the
    epochs. Needs matplotlib: pip install 'hydranet[plot]'.

    With several runs, or a sweep folder (what `hydranet train --sweep`
    wrote: its runs are all drawn), each panel has one line per run, named
    as `hydranet compare` names it, over the run's own epochs. Runs that
    differ only in train.seed are one line (unless --no-group): their mean,
    in a shaded band of ± one sample std, over the epochs all of them have.
    Only the tasks and metrics every run has are drawn; a note names what
    was left out.

    \b
    Examples:
      hydranet plot runs/demo-20260101-120000
      hydranet plot runs/dwa --out charts/dwa
      hydranet plot runs/w                    (a sweep: charts in runs/w)
      hydranet plot runs/w --no-group
      hydranet plot runs/w-sum runs/w-dwa --out charts/sum-vs-dwa
    """
    from hydranet.core.plot import NeedsOut, is_sweep_folder, plot_run, plot_runs

    if len(runs) == 1 and not is_sweep_folder(runs[0]):
        written = plot_run(runs[0], out_dir)
        notes: list[str] = []
    else:
        try:
            drawn = plot_runs(runs, out_dir, group=not no_group, skip_bad=skip_bad)
        except NeedsOut as error:
            raise click.UsageError(str(error)) from None
        written, notes = drawn.written, drawn.notes
    for path in written:
        click.echo(f"wrote {path}")
    for note in notes:
        click.echo(f"note: {note}")


# ------------------------------------------------------------------ compare


def _epoch_choice(ctx: click.Context, param: click.Parameter, value: str) -> str | int:
    if value in ("best", "last"):
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise click.BadParameter(f"{value!r} is not best, last or an epoch number (1, 2, ...)")


@cli.command(short_help="Compare runs of the same tasks: metrics, delta_m, time.")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--ref", "refs", metavar="RUN|TASK=RUN", multiple=True,
              help="The run the others are measured against (default: the first RUN; for the runs of one sweep "
                   "folder, the sweep's first run). Or one per task, TASK=RUN, repeated for every task: each "
                   "task's metrics measured against its own run (a single-task baseline), or a folder of one "
                   "spec's seeds, at their means.")
@click.option("--epoch", default="best", show_default=True, metavar="best|last|N", callback=_epoch_choice,
              help="Read each run's metrics at its best epoch (what best.pt holds), its last, or epoch N.")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="Compare the validation metrics (which chose each run's best epoch), or the test metrics its "
                   "best epoch scored once on its held-out test split (data.test_fraction > 0; summary.json's "
                   "test): the numbers to report. test needs --epoch best.")
@click.option("--sort", is_flag=True, help="Order the runs by delta_m, best first (seed groups by the mean delta_m the table shows).")
@click.option("--skip-bad", is_flag=True,
              help="Leave out, with a note, the folders that are not runs or have no finished epoch "
                   "(as runs/* may name), instead of stopping.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: every run's metrics, delta_m, differences, notes.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one line per run (or group of seeds: each metric's "
                                                    "mean and std, and n), the compared metrics, delta_m_percent "
                                                    "(notes go to stderr).")
@click.option("--no-group", is_flag=True, help="One row per run, even for runs that differ only in train.seed.")
def compare(runs: tuple[str, ...], refs: tuple[str, ...], epoch: str | int, split: str, sort: bool, skip_bad: bool,
            as_json: bool, as_csv: bool, no_group: bool) -> None:
    """Compare runs of the same tasks: their validation metrics and delta_m.

    Each RUN is a folder `hydranet train` wrote, or a sweep folder (`train
    --sweep --out DIR`), which stands for its runs in the sweep's order. One
    row per run: its weighting, backbone, epochs, best epoch, training
    seconds per epoch (the median), each task's validation metrics, and
    delta_m% (Delta m in the multi-task literature: Maninis et al.
    2019, computed as LibMTL does): the mean relative change of the metrics
    against the reference run, each task's metrics averaged first, with the
    sign flipped where lower is better (an MAE), so positive is better. A
    last column lists what else differs from the reference's spec, if
    anything does.

    Runs whose specs differ only in train.seed are one row (unless
    --no-group): each metric, the time and delta_m as mean ± sample std
    over the n runs (each run's delta_m against the reference group's mean
    metrics; --json and --csv also give delta_m on the means). Runs with
    another data.split_seed stay apart: they validate on other images. With
    no seeds to group, the table is one row per run.

    Runs with other tasks or metrics are compared on those every run has;
    a note names what was left out.

    With a reference per task (--ref TASK=RUN for each compared task), as
    the literature reports delta_m against single-task baselines, each
    task's metrics are measured against its own reference run (one that
    has other tasks too gives only that task's), or a folder of its seeds
    at their means; no row is the reference, and the notes name each
    task's and the values it gives.

    The validation metrics chose each run's best epoch, so they flatter it.
    Runs trained with data.test_fraction > 0 also scored their best epoch
    once on a held-out test split: --split test compares those (a run
    without them is refused, or left out with --skip-bad).

    \b
    Examples:
      hydranet compare runs/w-sum runs/w-uncertainty runs/w-dwa
      hydranet compare runs/* --skip-bad --sort
      hydranet compare runs/w-* --ref runs/w-sum --epoch last
      hydranet compare runs/w-* --csv > weightings.csv
      hydranet compare runs/sweep --no-group
      hydranet compare runs/w-* --split test
      hydranet compare runs/w --ref age=runs/stl_age --ref gender=runs/stl_gender --ref ethnicity=runs/stl_eth
    """
    from hydranet.core.compare import compare as compare_folders
    from hydranet.core.compare import options_conflict, reference_options
    from hydranet.core.compare_output import comparison_csv, comparison_json, comparison_table
    from hydranet.core.errors import InputError

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    conflict = options_conflict(epoch, split)
    if conflict:
        raise click.UsageError(conflict)
    try:
        ref = reference_options(refs)
    except InputError as error:
        raise click.UsageError(str(error)) from None
    comparison = compare_folders(runs, ref=ref, epoch=epoch, split=split, sort=sort, skip_bad=skip_bad,
                                 group=not no_group)
    if as_json:
        click.echo(comparison_json(comparison), nl=False)
    elif as_csv:
        click.echo(comparison_csv(comparison), nl=False)
        for note in comparison.notes:
            click.echo(f"note: {note}", err=True)
    else:
        click.echo(comparison_table(comparison))


# ------------------------------------------------------------------ list / plugins (core/cli_listing.py)

from hydranet.core.cli_listing import list_components, plugins_command  # noqa: E402

cli.add_command(list_components)
cli.add_command(plugins_command)


# ------------------------------------------------------------------ spec


@cli.group()
def spec() -> None:
    """Check, show and describe spec files.

    \b
    Examples:
      hydranet spec validate my.yaml
      hydranet spec show demo
      hydranet spec schema > hydranet-spec.schema.json
    """


@spec.command("validate")
@click.argument("specs", nargs=-1, required=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP, callback=check_overrides)
def spec_validate(specs: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Check spec files; print every problem with its path.

    \b
    Example:
      hydranet spec validate specs/*.yaml
    """
    from hydranet.core.spec import load_spec
    from hydranet.core.surgery import init_from_problem

    failed = 0
    for source in specs:
        try:
            problem = init_from_problem(load_spec(source, overrides).spec.init_from)
            if problem:
                raise HydranetError(problem)
            click.echo(f"{source}: ok")
        except HydranetError as error:
            failed += 1
            named = getattr(error, "source", None)  # a SpecError names its file already
            echo_error(error, str(error) if named else f"{source}: {error}")
    if failed:
        raise SystemExit(1)


@spec.command("show")
@click.argument("source", required=False, default="demo")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP, callback=check_overrides)
def spec_show(source: str, overrides: tuple[str, ...]) -> None:
    """Print a spec with every default filled in (as YAML).

    SOURCE is a YAML or TOML spec file, or the name of a built-in spec
    (demo, utkface); left out, the built-in demo.

    \b
    Example:
      hydranet spec show demo --set weighting=dwa
    """
    from hydranet.core.spec import load_spec

    click.echo(load_spec(source, overrides).to_yaml(), nl=False)


@spec.command("schema")
def spec_schema_command() -> None:
    """Print the JSON Schema of spec files (for editor completion and validation).

    \b
    Example:
      hydranet spec schema > hydranet-spec.schema.json
    """
    from hydranet.core.spec import spec_schema

    click.echo(json.dumps(spec_schema(), indent=2))


# ------------------------------------------------------------------ eval / predict / export (core/cli_model.py)

from hydranet.core.cli_model import eval_command, export_command, predict_command  # noqa: E402

for _command in (eval_command, predict_command, export_command):
    cli.add_command(_command)

from hydranet.core.cache_command import cache_group  # noqa: E402

cli.add_command(cache_group)


def main() -> None:
    """Console-script entry point."""
    _show_own_warnings_as_lines()
    try:
        cli(prog_name="hydranet")
    except KeyboardInterrupt:  # Ctrl-C before a command started (click's own handling covers the rest)
        stopped_by_ctrl_c()


def stopped_by_ctrl_c() -> None:
    """Exit as Ctrl-C asked: status 130, one line (on rank 0 only under torchrun), no traceback."""
    if is_main_rank():
        sys.stderr.write("\nstopped by Ctrl-C\n")
    raise SystemExit(128 + signal.SIGINT)


if __name__ == "__main__":  # pragma: no cover
    main()
