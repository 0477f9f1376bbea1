"""The run folder: resolved spec, per-epoch metrics CSV, log, summary, checkpoints.

Everything a run writes goes through here, so every file is written the same
careful way: the folder is checked for writability and free space before
training starts, the CSV is flushed after every epoch, and JSON and
checkpoints are replaced atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hydranet.core.atomic import atomic_write_text
from hydranet.core.errors import HydranetError

MIN_FREE_BYTES = 200 * 1024 * 1024


def default_run_dir(spec_source: str | None, root: str | Path = "runs") -> Path:
    """runs/<spec name>-<date>-<time>, with a numeric suffix if that exists already."""
    stem = Path(spec_source).stem if spec_source else "run"
    base = Path(root) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


#: Of a run's files, those written once an epoch is done: a folder holding one has a run to resume or keep,
#: and a new run there would mix its files with the old one's.
RESULT_FILES = ("metrics.csv", "last.pt", "best.pt", "summary.json")
#: Every file a run writes.
RUN_FILES = ("spec.yaml", "metrics.csv", "train.log", "last.pt", "best.pt", "summary.json", "compile.log")


class RunFolder:
    """One training run's output folder.

    A new run (`fresh`) refuses a folder that already holds a run: appending
    its rows to the old metrics.csv and replacing the old checkpoints would
    lose the old run and garble both. A resumed run is the one that may
    continue a folder's files.
    """

    def __init__(self, path: str | Path, *, echo: bool = True, min_free_bytes: int = MIN_FREE_BYTES,
                 fresh: bool = False):
        self.path = Path(path)
        self.echo = echo
        if fresh and self.path.is_dir():
            held = [name for name in RUN_FILES if (self.path / name).exists()]
            if any(name in held for name in RESULT_FILES):
                raise HydranetError(f"{self.path} already holds a run ({', '.join(held)}); continue it with "
                                    f"`hydranet train --resume {self.path}`, or choose a new folder with --out DIR")
            for name in held:  # a run that stopped before its first epoch ended: nothing to keep or resume
                (self.path / name).unlink()
        #: True when this run made the folder, so a run that fails before training may take it away again.
        self.created = not self.path.exists()
        self.fresh = fresh
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as error:
            raise HydranetError(f"cannot write to the output folder {self.path}: {error.strerror or error}. "
                                "Choose another with --out DIR.") from None
        free = shutil.disk_usage(self.path).free
        if free < min_free_bytes:
            raise HydranetError(f"only {free // 2**20} MiB free on the disk of {self.path}; checkpoints need more. "
                                "Free some space or choose another folder with --out DIR.")
        self._fields: list[str] | None = None

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

        `console=False` is for the message of an error about to be raised:
        the error itself reaches the user, and the line would say it twice.
        """
        with open(self.path / "train.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self.echo and console:
            tqdm.write(line, file=sys.stderr)

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        atomic_write_text(target, text)
        return target

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def metrics_rows(self) -> list[dict[str, Any]]:
        """The rows already in metrics.csv (a resumed run continues them)."""
        return read_metrics(self.metrics_csv) if self.metrics_csv.exists() else []

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop rows after `last_epoch`: a run killed between writing a row and its checkpoint repeats that epoch."""
        if not self.metrics_csv.exists():
            return
        with open(self.metrics_csv, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields, rows = reader.fieldnames or [], [r for r in reader if int(float(r["epoch"])) <= last_epoch]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_csv, buffer.getvalue())
        self._fields = list(fields)

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one epoch's row to metrics.csv (header from the first row), flushed to disk.

        Lines end in "\n" (the csv module's default is "\r\n"); files written
        with "\r\n" by older versions are read and continued all the same.
        """
        new_file = not self.metrics_csv.exists()
        if self._fields is None and not new_file:
            with open(self.metrics_csv, newline="", encoding="utf-8") as handle:
                self._fields = next(csv.reader(handle), None) or list(row)
        if self._fields is None:
            self._fields = list(row)
        with open(self.metrics_csv, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._fields, extrasaction="ignore", lineterminator="\n")
            if new_file:
                writer.writeheader()
            writer.writerow({k: csv_number(v) for k, v in row.items()})
            handle.flush()
            os.fsync(handle.fileno())


class SilentRunFolder(RunFolder):
    """The run folder as seen by a distributed run's other ranks: same paths, writes nothing.

    Only rank 0 writes logs, metrics and checkpoints, so two processes never
    race on one file; the others keep the paths (to read a checkpoint back).
    """

    def __init__(self, path: str | Path):  # no folder checks: rank 0 made them
        self.path = Path(path)
        self.echo = False
        self.created = self.fresh = False  # rank 0's to remove
        self._fields = None

    def log(self, line: str = "", *, console: bool = True) -> None:
        pass

    def write_text(self, name: str, text: str) -> Path:
        return self.path / name

    def truncate_metrics(self, last_epoch: int) -> None:
        pass

    def append_metrics(self, row: dict[str, Any]) -> None:
        pass


def csv_number(value: Any) -> Any:
    """A float for a CSV cell, with 9 significant digits: enough to give back exactly the float32 training computed.

    So `hydranet compare`, plots and a user's own analysis read the run's own
    numbers, not ones rounded to 6 digits.
    """
    return f"{value:.9g}" if isinstance(value, float) else value


def read_metrics(path: str | Path) -> list[dict[str, float | str]]:
    """Rows of a metrics.csv with numbers parsed."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parsed: dict[str, float | str] = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = value
            rows.append(parsed)
    return rows
