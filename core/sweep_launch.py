"""A sweep's runs of several processes: each run one torchrun launch, trained one after another.

`hydranet train --sweep ... --nproc N` plans and compares in its own process
(`core/sweep.py`) and hands each run to a `Launcher`, which starts it as
`hydranet train ... --nproc N` would start one run. Apart from `sweep.py` so
that the one-process sweep does not carry the launching.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydranet.core.errors import HydranetError, TrainingInterrupted
from hydranet.core.sweep import PlannedRun
from hydranet.core.wording import plural


@dataclass(frozen=True)
class LaunchedRun:
    """What the sweep says of a run a `Launcher` trained, as it says it of one trained in its own process."""

    best_epoch: int | None
    run_dir: Path


class RunFailed(HydranetError):
    """A launched run ended with an error; the message is the error its processes printed (or their status)."""


@dataclass(frozen=True)
class Launcher:
    """Trains a sweep's run as `hydranet train ... --nproc N` trains one: a torchrun launch of N processes.

    Each run needs processes of its own (a process group is set up once per
    process), so the sweep stays in this process and launches its runs one
    after another (`launch_local`), each given the command line of that one
    run: `SPEC --set ... --out RUN`, or `--resume RUN` for a stopped one.
    Its folder is then what a run of the one-process sweep leaves, and the
    sweep skips, resumes, reports and compares it the same way.
    """

    nproc: int
    spec: str | None  #: the spec file or built-in spec name as given (None: the demo)
    overrides: tuple[str, ...] = ()  #: the --set values every run takes
    progress: bool | None = None

    def argv(self, run: PlannedRun) -> list[str]:
        """`train ...` for the launch: the arguments of `hydranet train` for this one run."""
        bars = [] if self.progress is None else ["--progress" if self.progress else "--no-progress"]
        if run.state == "resume":
            return ["train", "--resume", str(run.path), *bars]
        sets = [part for value in [*self.overrides, *run.combination.overrides] for part in ("--set", value)]
        return ["train", *([self.spec] if self.spec is not None else []), *sets, "--out", str(run.path), *bars]

    def __call__(self, run: PlannedRun) -> LaunchedRun:
        """Train `run` in `nproc` processes; TrainingInterrupted if a signal stopped it, RunFailed if it failed."""
        import os
        import tempfile

        from hydranet.core.compare import RunProblem, read_run
        from hydranet.core.distributed import launch_local
        from hydranet.core.launch import AGENT_SIGNALS, ERROR_FILE_VARIABLE

        with tempfile.TemporaryDirectory(prefix="hydranet-sweep-") as folder:
            error_file = Path(folder) / "error"
            before = os.environ.get(ERROR_FILE_VARIABLE)
            os.environ[ERROR_FILE_VARIABLE] = str(error_file)  # the launcher leaves rank 0's error there
            try:
                status = launch_local(self.nproc, self.argv(run), device=run.resolved.spec.train.device)
            finally:
                if before is None:
                    os.environ.pop(ERROR_FILE_VARIABLE, None)
                else:
                    os.environ[ERROR_FILE_VARIABLE] = before
            said = error_file.read_text(encoding="utf-8").strip() if error_file.is_file() else ""
        if status - 128 in AGENT_SIGNALS:  # Ctrl-C or SIGTERM: the run saved and said so; the sweep stops too
            raise TrainingInterrupted(f"the run in {run.path} was stopped by a signal", status - 128)
        if status != 0:
            raise RunFailed(said or f"its {plural(self.nproc, 'process')} ended with exit status {status} "
                                    "(the error is printed above)")
        try:
            # at its last epoch: a run none of whose epochs had a finite validation loss finished (best epoch 0)
            return LaunchedRun(read_run(run.path, epoch="last").best_epoch, run.path)
        except RunProblem as problem:
            raise RunFailed(f"its processes ended without an error, but {problem}") from None


__all__ = ["Launcher", "LaunchedRun", "RunFailed"]
