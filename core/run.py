"""The run folder: resolved spec, per-epoch metrics CSV, log, summary, checkpoints.

Everything a run writes goes through here, so every file is written the same
careful way: the folder is checked for writability and free space before
training starts, the CSV is flushed after every epoch, and JSON and
checkpoints are replaced atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hydranet.core.atomic import atomic_write_text, remove_stale_temporaries, why_unwritable
from hydranet.core.errors import RunFolderError
from hydranet.core.paths import printable
from hydranet.core.wording import english_list, plural
from hydranet.core.write_failures import refused_by_system, write_failed

MIN_FREE_BYTES = 200 * 1024 * 1024
#: The run folder's lock file (see `RunLock`): present while a run writes the folder; not one of its files.
LOCK_FILE = ".lock"

#: how a train.log line that warns begins: `RunFolder.log` keeps such lines for `RunResult.notes`
WARNING_PREFIX = "warning:"
#: how train.log's line about a run that ended with an error begins (`Trainer._log_failure`; `compare` reads it)
FAILURE_LINE = "error: the run stopped "


def default_run_dir(spec_source: str | None, root: str | Path = "runs") -> Path:
    """runs/<spec name>-<date>-<time>, with a numeric suffix if that exists already.

    A spec file named spec.yaml (a run folder's own, trained again) is named by its folder, less the date and
    time this function gave that folder: runs/demo-20261127-101010/spec.yaml makes runs/demo-<date>-<time>.
    """
    base = Path(root) / f"{run_name(spec_source)}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


_RUN_DIR_TIME = re.compile(r"-\d{8}-\d{6}(-\d+)?$")


def run_name(spec_source: str | None) -> str:
    """The name a run of `spec_source` is given: the spec's name ("run" for none; see `default_run_dir`)."""
    if not spec_source:
        return "run"
    path = Path(spec_source)
    if path.stem != "spec":
        return path.stem
    folder = path.resolve().parent.name if path.suffix else ""
    return _RUN_DIR_TIME.sub("", folder) or "spec"


#: Of a run's files, those written once an epoch is done: a folder holding one has a run to resume or keep,
#: and a new run there would mix its files with the old one's.
RESULT_FILES = ("metrics.csv", "last.pt", "best.pt", "summary.json")
#: Every file a run writes.
RUN_FILES = ("spec.yaml", "metrics.csv", "train.log", "last.pt", "best.pt", "summary.json", "compile.log")


def resume_command(run_dir: str | Path, option: str = "--set", processes: int | None = None) -> str:
    """How to continue the run in `run_dir`, in the caller's words: `option` is how the caller names overrides
    (the CLI's "--set", the Python API's "overrides"; see `plan_run`).

    `processes` is how many processes trained it (default: this process's torchrun WORLD_SIZE, 1 outside one):
    above 1 the CLI's command says `--nproc N`, since a run resumed on another number of processes reseeds its
    per-process generators. The Python API trains in one process (a script of one's own under torchrun resumes
    as it started), so its call stays as it is."""
    if processes is None:
        try:
            processes = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            processes = 1
    if option.startswith("-"):
        return f"hydranet train --resume {run_dir}" + (f" --nproc {processes}" if processes > 1 else "")
    return f"hydranet.train(resume={json.dumps(str(run_dir))})"


def _new_folder(option: str) -> str:
    """The caller's way to name a new run folder, by `option` as in `resume_command`."""
    return "--out DIR" if option.startswith("-") else "out_dir="


def _init_from_override(weights: Path, option: str) -> str:
    """The caller's override that starts a new run from `weights`, by `option` as in `resume_command`."""
    return (f"--set init_from={weights}" if option.startswith("-")
            else f"overrides={json.dumps(f'init_from={weights}')}")


class RunLock:
    """An exclusive advisory lock on a run folder (RUN/.lock), held by the one process that writes it.

    Two processes writing one run folder interleave their metrics.csv rows and
    train.log lines and overwrite each other's last.pt, so a run (rank 0 of a
    distributed one) holds this for as long as it runs, and a second run
    there is refused. The lock is the operating system's (`flock`; `msvcrt`
    on Windows): it goes with the process however that ends, so a killed
    run leaves no stale lock, only a file the next run takes over. The file
    holds the holder's PID and start time, for the refusal's message; it is
    removed when the run ends.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._handle: Any = None
        while True:
            handle = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+b")
            if not _try_lock(handle):
                holder = _describe_holder(handle)
                handle.close()
                raise RunFolderError(in_use_message(self.folder, holder))
            try:  # the holder before us may have removed the file we opened: then lock the new one
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(self.path))
            except OSError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {time.time():.0f}\n".encode())
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Remove the lock file and let go of the lock (again: nothing)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: a newcomer then locks a file of its own
        except OSError:
            pass  # Windows does not remove an open file; the next run takes it over
        handle.close()


def check_not_in_use(folder: str | Path) -> None:
    """Refuse a run folder another process is running in, without taking it (nothing written, nothing created).

    For the process that only plans a run: the `--nproc` launcher, whose
    rank 0 then takes the lock itself, and `plan_run` before any data loads.
    """
    path = Path(folder) / LOCK_FILE
    try:
        handle = open(path, "r+b")
    except OSError:  # no lock file (or none we may open): no run holds this folder
        return
    with handle:
        if not _try_lock(handle):
            raise RunFolderError(in_use_message(Path(folder), _describe_holder(handle)))
        _unlock(handle)


def in_use_message(folder: Path, holder: tuple[int, float] | None) -> str:
    """Why a run folder is refused while another run writes it, and what to do."""
    if holder is None:
        return f"{folder} is in use by another hydranet run; wait for it to finish or stop it"
    pid, started = holder
    when = time.strftime("%H:%M:%S" if time.strftime("%Y%m%d", time.localtime(started)) == time.strftime("%Y%m%d")
                         else "%Y-%m-%d %H:%M:%S", time.localtime(started))
    stop = f"kill -INT {pid}" if os.name != "nt" else f"Ctrl-C in its window, or taskkill /PID {pid}"
    return (f"{folder} is in use by another hydranet run (PID {pid}, started {when}); wait for it to finish or "
            f"stop it ({stop})")


def _describe_holder(handle: Any) -> tuple[int, float] | None:
    """(PID, start time) written in a lock file, or None when it cannot be read."""
    try:
        handle.seek(0)
        pid, started = handle.read(100).decode().split()[:2]
        return int(pid), float(started)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: where msvcrt locks its one byte: past the PID and time written at the start, which stay readable
_WINDOWS_LOCK_OFFSET = 1024


def _try_lock(handle: Any) -> bool:
    """Take an exclusive lock on `handle` without waiting: True, or False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:  # a file system without locks: run unguarded, as before there were locks
            return True
    try:
        import msvcrt

        handle.seek(_WINDOWS_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return True
    except ImportError:
        return True
    except OSError:
        return False


def _unlock(handle: Any) -> None:
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return
    try:
        import msvcrt

        handle.seek(_WINDOWS_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    except (ImportError, OSError):
        pass


class RunFolder:
    """One training run's output folder.

    A new run (`fresh`) refuses a folder that already holds a run: appending
    its rows to the old metrics.csv and replacing the old checkpoints would
    lose the old run and garble both. A resumed run is the one that may
    continue a folder's files.
    """

    def __init__(self, path: str | Path, *, echo: bool = True, min_free_bytes: int = MIN_FREE_BYTES,
                 fresh: bool = False, option: str = "--set", tasks: Sequence[str] | None = None):
        self.path = Path(path)
        #: the run's task names, from the spec the caller read (a resumed run's last.pt holds it): metrics.csv
        #: must have their loss columns. None: read them from the folder's spec.yaml, the same resolved spec.
        self.tasks = None if tasks is None else list(tasks)
        self.echo = echo
        #: every "warning: ..." line logged, in order (`log`), for `RunResult.notes`: with echo off (a notebook's
        #: `train(..., echo=False)`) train.log would be the only place they reach
        self.warnings: list[str] = []
        #: how the caller names overrides ("--set" on the command line): messages use the caller's words
        self.option = option
        self.lock: RunLock | None = None
        #: True when this run made the folder, so a run that fails before training may take it away again.
        self.created = not self.path.exists()
        self.fresh = fresh
        #: a lock file there before this run took the folder: left by a run that was killed (see `_check_fresh`)
        self.stale_lock = (self.path / LOCK_FILE).is_file()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
            # before looking at (or clearing) the folder's files: another run may be writing them
            self.lock = RunLock(self.path)
        except OSError as error:
            way_out = (f"Choose another with {_new_folder(option)}." if fresh else  # a resumed run writes its own
                       f"A resumed run writes the folder it started in: make it writable, or start a new run from "
                       f"its weights with init_from: {self.path / 'last.pt'} and another folder.")
            if self.lock is None and self.created and fresh:  # refused before writing anything: leave no folder
                shutil.rmtree(self.path, ignore_errors=True)
            raise RunFolderError(f"cannot write to the output folder {self.path}: "
                                 f"{why_unwritable(self.path, error)}. {way_out}") from None
        try:
            if fresh:
                self._check_fresh()
            else:  # a resumed run continues metrics.csv's rows: refuse one it cannot continue, before training
                self._check_metrics_to_continue()
            free = shutil.disk_usage(self.path).free
            if free < min_free_bytes:
                elsewhere = f" or choose another folder with {_new_folder(option)}" if fresh else ""
                raise RunFolderError(f"only {free // 2**20} MiB free on the disk of {self.path}; checkpoints need "
                                    f"more. Free some space{elsewhere}.")
        except BaseException:
            self.close()
            if self.created and fresh:  # refused (low disk space) before writing anything: leave no folder behind
                shutil.rmtree(self.path, ignore_errors=True)
            raise
        self._fields: list[str] | None = None
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Remove the temporary files (`.best.pt.PID@HOST.XXXX.tmp`) a killed writer of this run folder left.

        A checkpoint or text file is written beside its target and renamed over
        it (`atomic_file`); a SIGKILL or power cut mid-write leaves the
        temporary for good. The folder's lock is held, so no other run of it is
        writing one now; `remove_stale_temporaries` still removes only those
        whose writer is gone or that are a day old. Each removed is logged.
        """
        removed = remove_stale_temporaries(self.path, RUN_FILES)
        if removed:
            self.log(f"removed {plural(len(removed), 'temporary file')} that a killed run left while writing: "
                     + ", ".join(path.name for path in removed), console=False)

    def _check_fresh(self) -> None:
        """Refuse a folder holding another run's results; clear what a run that never finished an epoch left."""
        held = [name for name in RUN_FILES if (self.path / name).exists()]
        if "summary.json" in held:  # written once the last epoch is done: --resume has nothing left to train
            raise RunFolderError(self._finished_run(held))
        if any(name in held for name in RESULT_FILES):
            raise RunFolderError(f"{self.path} already holds a run ({', '.join(held)}); continue it with "
                                f"`{resume_command(self.path, self.option)}`, or choose a new folder with "
                                f"{_new_folder(self.option)}")
        if held and not self._left_by_a_run(held):
            raise RunFolderError(self._not_a_runs_files(held))
        others = self._others_files()
        if others:
            raise RunFolderError(self._not_a_run_folder(others))
        for name in held:  # a run that stopped before its first epoch ended: nothing to keep or resume
            (self.path / name).unlink()

    def _others_files(self) -> list[str]:
        """What the folder holds besides a run's files (`RUN_FILES`) and hidden ones, sorted (none: a new folder).

        Hidden entries (.DS_Store, .ipynb_checkpoints, the lock, a killed
        writer's temporaries) are what a system, an editor or a run leaves in
        any folder: they do not make it someone's folder of other things.
        """
        try:
            return sorted(entry.name for entry in self.path.iterdir()
                          if not entry.name.startswith(".") and entry.name not in RUN_FILES)
        except OSError:
            return []

    def _not_a_run_folder(self, others: list[str]) -> str:
        """Why a new run refuses a folder of other things (a folder of images, a project's root)."""
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        inside = self.path / "RUN-NAME"
        named = f"--out {inside}" if self.option.startswith("-") else f"out_dir={str(inside)!r}"
        return (f"{self.path} is not empty ({shown}) and holds no run: a run folder is the run's own, and a new run "
                f"would write its checkpoints, metrics and log among these files. Give a new folder for the run, "
                f"e.g. one inside it: {named}")

    def _left_by_a_run(self, held: list[str]) -> bool:
        """Whether `held` (spec.yaml, train.log, compile.log: no results) is what a hydranet run left, provably.

        A run writes its resolved spec first, byte for byte as `yaml.safe_dump`
        writes it (a hand-written or commented spec never reads so), then
        train.log; a run killed before it could clean up leaves its lock file
        too. So: spec.yaml as hydranet writes it, beside train.log or a stale
        lock. Anything else may be the user's own (their spec in the folder
        given as --out, a log they keep there) and is not ours to remove.
        """
        if "spec.yaml" not in held or not ("train.log" in held or self.stale_lock):
            return False
        return is_written_spec(self.path / "spec.yaml")

    def _not_a_runs_files(self, held: list[str]) -> str:
        """Why a new run refuses a folder holding files it would replace that no run of hydranet left there."""
        one = len(held) == 1
        them = "it" if one else "them"
        return (f"{self.path} holds {english_list(held)}, which a run writes in its folder, but "
                f"{'it is' if one else 'they are'} not what an earlier hydranet run left there: a new run would "
                f"replace or remove {them}. Choose another folder for the run with {_new_folder(self.option)} (e.g. a "
                f"new folder under runs/), or move {them} away")

    def _finished_run(self, held: list[str]) -> str:
        """Why a new run cannot have a finished run's folder, and the ways on: another folder, or its weights.

        Not --resume: a finished run has nothing left to train, and a resumed
        run keeps its spec, so it cannot be given more epochs.
        """
        try:
            epochs = len(self.metrics_rows())
            done = f"finished its {plural(epochs, 'epoch')}; " if epochs else ""
        except (OSError, ValueError, KeyError):
            done = ""
        weights = self.best_checkpoint if self.best_checkpoint.exists() else self.last_checkpoint
        override = _init_from_override(weights, self.option)
        return (f"{self.path} holds a finished run ({done}{', '.join(held)}), and a new run needs a folder of its "
                f"own: choose one with {_new_folder(self.option)}. To train further from this run's weights, start the new run "
                f"with init_from: {weights} (in its spec, or {override})")

    def _check_metrics_to_continue(self) -> None:
        """Refuse a metrics.csv a resumed run cannot continue: one whose header lacks the run's columns.

        A file re-saved by a spreadsheet (a byte-order mark, which is read
        past) keeps them; one emptied, or with its header changed, would take
        the continued epochs' rows as blank lines under the wrong columns.
        """
        if not self.metrics_csv.is_file():
            return
        try:
            with open(self.metrics_csv, newline="", encoding="utf-8-sig") as handle:
                lines = list(csv.reader(handle))
        except UnicodeDecodeError:
            problem = "is not UTF-8 text"
        except (OSError, csv.Error) as error:
            problem = f"cannot be read ({getattr(error, 'strerror', None) or error})"
        else:
            problem = self._metrics_problem(lines)
            if problem is None:
                return
        override = _init_from_override(self.last_checkpoint, self.option)
        raise RunFolderError(f"{self.metrics_csv} {problem}: it is not the file this run wrote (edited, or saved again "
                            f"by a spreadsheet), and the resumed run could not continue its rows. Put back the "
                            f"metrics.csv the run wrote and resume again, or start a new run from this run's weights "
                            f"with init_from: {self.last_checkpoint} (in its spec, or {override})")

    def _metrics_problem(self, lines: list[list[str]]) -> str | None:
        """Why metrics.csv's `lines` cannot be continued, or None; cheapest check first.

        An empty file is told before anything else is looked at, and the rows
        are scanned for an epoch number only once the header has every column.
        """
        if not lines:
            return "is empty (it has no header)"
        header = lines[0]
        missing = [column for column in self._run_columns() if column not in header]
        if missing:
            return (f"has no {english_list(missing)} {'column' if len(missing) == 1 else 'columns'} in its "
                    f"header (it has {', '.join(header)[:200] or 'none'})")
        column = header.index("epoch")  # there: "epoch" is one of the run's columns
        bad = next((number for number, line in enumerate(lines[1:], start=2)
                    if line and not _is_number(line[column] if column < len(line) else "")), None)
        return None if bad is None else f"has no epoch number on line {bad}"

    def _run_columns(self) -> list[str]:
        """Columns every row of this run's metrics.csv has, in every version: the epoch, each task's losses."""
        return ["epoch"] + [f"{kind}.{name}" for name in self._task_names() for kind in ("train_loss", "val_loss")]

    def _task_names(self) -> list[str]:
        """The run's task names: as given (`tasks`), else from spec.yaml; none when it cannot be read."""
        if self.tasks is not None:
            return self.tasks
        import yaml

        try:
            tasks = yaml.safe_load((self.path / "spec.yaml").read_text(encoding="utf-8")).get("tasks") or []
            return [task["name"] for task in tasks]
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError, TypeError, KeyError):
            return []  # no readable spec.yaml: the epoch column alone

    def close(self) -> None:
        """Let go of the folder (its lock), once the run has written its last file."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def remove_if_unused(self) -> bool:
        """Take away what a new run wrote when it wrote no checkpoint: the folder, if the run made it; True if so.

        A run that fails before its first checkpoint (a missing data folder, a
        bad image in strict mode) would otherwise leave a folder holding only
        spec.yaml and a log. That looks like a run, and the next try refuses
        it. The error itself reaches the user on the terminal. A resumed run's
        folder is never touched.
        """
        if not self.fresh or self.last_checkpoint.exists() or self.best_checkpoint.exists():
            return False
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            return True
        for name in RUN_FILES:  # a folder the user made: a fresh run refused it if it held any of these
            (self.path / name).unlink(missing_ok=True)
        return False

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "best.pt"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    def log(self, line: str = "", *, console: bool = True) -> None:
        """A line for train.log and, unless `console` is False, for the user (stderr, above any progress bar).

        A console that cannot be written (stderr piped into `head`, which has
        exited; a terminal closed by SIGHUP) does not stop the run: its lines
        are dropped from then on, and train.log still gets every one.
        `console=False` is for the message of an error about to be raised:
        the error itself reaches the user, and the line would say it twice.
        """
        line = printable(line)  # a file name that is not UTF-8 (a Latin-1 name) is written escaped, not lost
        if line.startswith(WARNING_PREFIX):
            self.warnings.append(line)
        if self.echo and console:  # first: a train.log the disk refuses stops the run, and this line is seen
            try:
                tqdm.write(line, file=sys.stderr)
            except (OSError, ValueError):  # BrokenPipeError (`| head`), a terminal gone (SIGHUP), a closed stream
                self.echo = False  # the console is gone: the run goes on, and train.log keeps every line
        log = self.path / "train.log"
        with self._explained_write_failure(log, f"{log.name} has every line before this one"):
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    @contextlib.contextmanager
    def _explained_write_failure(self, path: Path, kept: str) -> Iterator[None]:
        """A write of `path` the system refuses (a full disk: `write_failures`) is a RunFolderError naming the
        file, what is `kept` as it was, and how to go on; other errors pass through as they are."""
        try:
            yield
        except OSError as error:
            if not refused_by_system(error):
                raise
            raise RunFolderError(write_failed(str(path), error, self.path, self.option, kept)) from None

    def write_text(self, name: str, text: str) -> Path:
        """Replace the run folder's file `name` whole (`atomic_write_text`): a refused write leaves the old one."""
        target = self.path / name
        kept = f"the previous {name} is intact" if target.is_file() else f"no {name} was written"
        with self._explained_write_failure(target, kept):
            atomic_write_text(target, text)
        return target

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def metrics_rows(self) -> list[dict[str, Any]]:
        """The rows already in metrics.csv (a resumed run continues them), each epoch an int as a new row has it.

        The other figures are as the file stores them (`csv_number`: 9 significant digits), not the floats the
        epoch computed: `RunResult.history` mixes such rows with the resumed run's own.
        """
        if not self.metrics_csv.exists():
            return []
        # the epoch column holds a number on every row (`_check_metrics_to_continue`); csv reads it back as 1.0
        return [{**row, "epoch": int(float(row["epoch"]))} for row in read_metrics(self.metrics_csv)]

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop rows after `last_epoch`: a run killed between writing a row and its checkpoint repeats that epoch."""
        if not self.metrics_csv.exists():
            return
        with open(self.metrics_csv, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields, rows = reader.fieldnames or [], [r for r in reader if int(float(r["epoch"])) <= last_epoch]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with self._explained_write_failure(self.metrics_csv, f"{self.metrics_csv.name} is as it was"):
            atomic_write_text(self.metrics_csv, buffer.getvalue())
        self._fields = list(fields)

    def missing_epochs(self, last_epoch: int) -> list[int]:
        """The epochs 1..`last_epoch` that metrics.csv has no row for (deleted rows, or a deleted file)."""
        try:
            present = {row["epoch"] for row in self.metrics_rows()}
        except (OSError, ValueError, KeyError):
            return []  # `_check_metrics_to_continue` refused a file it cannot read
        return [epoch for epoch in range(1, last_epoch + 1) if epoch not in present]

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one epoch's row to metrics.csv (header from the first row), flushed to disk.

        Lines end in "\n" (the csv module's default is "\r\n"); files written
        with "\r\n" by older versions are read and continued all the same.
        """
        new_file = not self.metrics_csv.exists()
        if self._fields is None and not new_file:
            with open(self.metrics_csv, newline="", encoding="utf-8-sig") as handle:
                self._fields = next(csv.reader(handle), None) or list(row)
        if self._fields is None:
            self._fields = list(row)
        size = 0 if new_file else self.metrics_csv.stat().st_size
        kept = (f"{self.metrics_csv.name} is as it was before epoch {row.get('epoch')}'s row, which is trained "
                "again on resume" if not new_file else f"no {self.metrics_csv.name} was written")
        with self._explained_write_failure(self.metrics_csv, kept):
            try:
                with open(self.metrics_csv, "a", newline="", encoding="utf-8") as handle:
                    writer = csv.DictWriter(handle, fieldnames=self._fields, extrasaction="ignore",
                                            lineterminator="\n")
                    if new_file:
                        writer.writeheader()
                    writer.writerow({k: csv_number(v) for k, v in row.items()})
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError:  # no half row: a reader, and the resume that appends this epoch again, see whole rows
                if new_file:
                    self.metrics_csv.unlink(missing_ok=True)
                else:
                    os.truncate(self.metrics_csv, size)
                raise


class SilentRunFolder(RunFolder):
    """The run folder as seen by a distributed run's other ranks: same paths, writes nothing.

    Only rank 0 writes logs, metrics and checkpoints, so two processes never
    race on one file; the others keep the paths (to read a checkpoint back).
    """

    def __init__(self, path: str | Path):  # no folder checks: rank 0 made them
        self.path = Path(path)
        self.echo = False
        self.warnings = []  # it logs nothing: rank 0 reports the run's warnings
        self.created = self.fresh = False  # rank 0's to remove
        self.lock = None  # rank 0 holds the folder's lock
        self.tasks = None
        self._fields = None

    def log(self, line: str = "", *, console: bool = True) -> None:
        pass

    def write_text(self, name: str, text: str) -> Path:
        return self.path / name

    def truncate_metrics(self, last_epoch: int) -> None:
        pass

    def missing_epochs(self, last_epoch: int) -> list[int]:
        return []

    def append_metrics(self, row: dict[str, Any]) -> None:
        pass


#: a run's spec.yaml holds these sections (`ResolvedSpec.to_dict`); a hand-written spec may leave most out
_RESOLVED_SECTIONS = ("backbone", "image_size", "tasks", "data", "weighting", "augment", "train", "init_from", "freeze")


def is_written_spec(path: Path) -> bool:
    """Whether `path` reads as a spec.yaml a run wrote: every section, in `yaml.safe_dump`'s own spelling."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return (isinstance(data, dict) and all(key in data for key in _RESOLVED_SECTIONS)
            and yaml.safe_dump(data, sort_keys=False) == text)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def csv_number(value: Any) -> Any:
    """A float for a CSV cell, with 9 significant digits: enough to give back exactly the float32 training computed.

    So `hydranet compare`, plots and a user's own analysis read the run's own
    numbers, not ones rounded to 6 digits.
    """
    return f"{value:.9g}" if isinstance(value, float) else value


def read_metrics(path: str | Path) -> list[dict[str, float | str]]:
    """Rows of a metrics.csv with numbers parsed."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: one a spreadsheet saved again
        for row in csv.DictReader(handle):
            parsed: dict[str, float | str] = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = value
            rows.append(parsed)
    return rows
