"""The torchrun that `hydranet train --nproc N` runs: torchrun itself, without its noise.

`python -m hydranet.core.launch ARGS` is `python -m torch.distributed.run ARGS`
(same arguments, same elastic agent, same worker environment) except for what
it prints and how it ends:

- A worker that fails has printed its own error (the CLI's one-line message);
  torchrun would add a `ChildFailedError` traceback and a table of every
  rank's exit. Here the launcher prints nothing and exits with the failing
  worker's status (the root cause's, as torchrun's table names it; 128 + N
  when a signal killed it, and then it says which rank and signal, since that
  worker could print nothing).
- A signal (the --nproc wrapper passes on Ctrl-C or SIGTERM) makes torchrun's
  agent raise `SignalException` after it has passed the signal to the workers
  and waited for them; the workers say how they stopped, so the launcher exits
  with 128 + N quietly instead of with a traceback.
- torchrun's own log lines ("Received 2 death signal, shutting down workers",
  "Sending process N closing signal", "failed (exitcode: 1) ...") go below
  ERROR unless the user set LOGLEVEL, torchrun's own switch for them.
- A worker's error is printed once, not once per rank: see `error_prefix`. A
  caller that needs it (a sweep's failure report) names a file for it in
  `ERROR_FILE_VARIABLE`, and then prints it itself: rank 0 leaves it there
  without printing it (unless a traceback or plugin hint comes with it).

Everything torch-specific is imported inside `main`, guarded, so this module
is cheap to import (the CLI's error handler uses `error_prefix`) and works with
torch 2.4 and later.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

#: Set by the launcher for its workers: a folder where rank 0 leaves the error it printed.
ERRORS_VARIABLE = "HYDRANET_LAUNCH_ERRORS"
#: Set by whoever starts the launcher and wants that error too (a sweep, to name it in its failure report):
#: the file the launcher copies it to before it removes its folder. Absent: the error goes only to the console.
ERROR_FILE_VARIABLE = "HYDRANET_LAUNCH_ERROR_FILE"
#: How long another rank waits for rank 0's error before printing its own.
WAIT_FOR_RANK_ZERO_SECONDS = 10.0
#: torchrun's loggers quieted to ERROR (and their children).
TORCHRUN_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run")
#: torchrun's ERROR lines that repeat what the worker or the launcher says anyway.
REPEATED_LINES = ("failed (exitcode",)
#: Signals torchrun's agent handles (raises SignalException for).
AGENT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
                      if hasattr(signal, name))


def error_prefix(message: str) -> str | None:
    """How this process prints `message` as its error: "" plainly, "[rank N] " on another rank, None not at all
    (another rank said it, or rank 0 leaves it to a sweep that prints it in its failure report: `_caller_reports`).

    Every rank of a launch usually fails the same way (a missing data folder, a
    bad spec value), and each would print the same line. Under the launcher,
    rank 0 prints its error and then leaves it in the launcher's folder;
    another rank waits up to `WAIT_FOR_RANK_ZERO_SECONDS` for it and stays
    silent when it says the same. An error of its own (or one rank 0 never
    reaches) it prints with its rank in front. Printing before leaving the
    file matters: a rank that stays silent exits, torchrun then stops rank 0,
    and by then rank 0 has printed. Under a plain torchrun (no folder) other
    ranks print with the prefix, so the lines are not mistaken for repeats.
    """
    rank = os.environ.get("RANK")
    if rank in (None, "0") or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        if rank == "0" and _caller_reports(message):
            error_printed(message)  # for the other ranks, and for the caller, who prints it in its own words
            return None
        return ""
    folder = os.environ.get(ERRORS_VARIABLE)
    if folder:
        said = Path(folder) / "rank0"
        deadline = time.monotonic() + WAIT_FOR_RANK_ZERO_SECONDS
        while time.monotonic() < deadline:
            if said.is_file():
                if said.read_text(encoding="utf-8") == message:
                    return None
                break
            time.sleep(0.05)
    return f"[rank {rank}] "


def _caller_reports(message: str) -> bool:
    """Whether rank 0 leaves `message` to the launcher's caller to print (a sweep names it in its failure report,
    `ERROR_FILE_VARIABLE`), instead of printing it too: the console would show it twice. Not when the error
    comes with more than its message (a traceback, `--traceback`; the hint that plugin code raised it)."""
    from hydranet.core.errors import raised_in, wants_traceback

    return (bool(os.environ.get(ERRORS_VARIABLE)) and bool(os.environ.get(ERROR_FILE_VARIABLE))
            and not wants_traceback() and not raised_in(message))


def error_printed(message: str) -> None:
    """Rank 0, after printing `message`: leave it for the other ranks (see `error_prefix`)."""
    folder = os.environ.get(ERRORS_VARIABLE)
    if folder and os.environ.get("RANK") == "0" and Path(folder).is_dir():
        partial = Path(folder) / "rank0.partial"
        partial.write_text(message, encoding="utf-8")
        partial.replace(Path(folder) / "rank0")  # whole or absent, never half-written


def is_main_rank() -> bool:
    """False in a torchrun worker other than rank 0 (which should not repeat rank 0's messages)."""
    return os.environ.get("RANK", "0") == "0"


class _RepeatedLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(REPEATED_LINES)


def quiet_torchrun_logs() -> None:
    """torchrun's log lines below ERROR, and its repeats, off; unless the user set LOGLEVEL for them."""
    if "LOGLEVEL" in os.environ:
        return
    names = [name for name in logging.root.manager.loggerDict if name.startswith(TORCHRUN_LOGGERS)]
    for name in {*TORCHRUN_LOGGERS, *names}:
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        logger.addFilter(_RepeatedLines())


def exit_status(error: BaseException) -> int:
    """The status a torchrun failure ends the launcher with (the root-cause worker's), saying what it must."""
    first = getattr(error, "get_first_failure", None)
    if first is None:
        return 1
    rank, failure = first()
    code = int(getattr(failure, "exitcode", 1) or 1)
    if code < 0:  # killed by a signal: it could not say so itself
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        print(f"hydranet: rank {rank} (pid {getattr(failure, 'pid', '?')}) was killed by {name}", file=sys.stderr)
        return 128 - code
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run torchrun with `argv` (default: this command's arguments); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    folder = tempfile.mkdtemp(prefix="hydranet-launch-")
    os.environ[ERRORS_VARIABLE] = folder  # the workers inherit this process's environment
    try:
        from torch.distributed import run as torchrun

        try:
            from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        except ImportError:  # pragma: no cover - every torch this supports has it
            ChildFailedError = ()  # type: ignore[assignment,misc]
        try:
            from torch.distributed.elastic.multiprocessing.api import SignalException
        except ImportError:  # pragma: no cover
            SignalException = ()  # type: ignore[assignment,misc]
        quiet_torchrun_logs()
        try:
            torchrun.run(torchrun.parse_args(with_log_dir(args, Path(folder) / "torchelastic")))
        except ChildFailedError as error:  # the workers printed their errors
            return exit_status(error)
        except SignalException as error:  # the workers said how they stopped
            return 128 + int(getattr(error, "sigval", signal.SIGTERM))
        finally:
            # torchrun's handlers raise SignalException; a signal from here on just ends the process
            for sig in AGENT_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
        return 0
    except KeyboardInterrupt:  # Ctrl-C before torchrun took over the signals: no worker has started
        print("\nstopped by Ctrl-C", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        os.environ.pop(ERRORS_VARIABLE, None)
        _keep_error(Path(folder) / "rank0")
        shutil.rmtree(folder, ignore_errors=True)


def with_log_dir(args: list[str], folder: Path) -> list[str]:
    """torchrun's `args` with its log folder in `folder` (removed with the launcher's own), unless they name one.

    Without one, torchrun makes a /tmp/torchelastic_* folder per launch (its workers' error files, empty unless
    output is redirected) and leaves it behind. `--log-dir` (`--log_dir`) is torchrun's option in torch 2.4 and
    later (hydranet's own commands take no such option, so one in `args` is the caller's, for torchrun).
    """
    if any(arg.split("=")[0] in ("--log-dir", "--log_dir") for arg in args):  # the caller's own
        return args
    return ["--log-dir", str(folder), *args]


def _keep_error(said: Path) -> None:
    """Copy the error rank 0 printed to the file ERROR_FILE_VARIABLE names, if the caller named one."""
    wanted = os.environ.get(ERROR_FILE_VARIABLE)
    if wanted and said.is_file():
        try:
            shutil.copyfile(said, wanted)
        except OSError:  # the error was printed all the same; the caller says less
            pass


if __name__ == "__main__":
    sys.exit(main())
