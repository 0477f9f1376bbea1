"""Whole-file writes: a reader sees the old file or the new one, never half of either.

Checkpoints, the run folder's text files, exports and prediction files all
go through `atomic_file`: write beside the target under a temporary name,
flush it to disk, rename it over the target, then flush the folder so the
rename itself survives a crash. A failure (a full disk, an exception,
Ctrl-C) removes the temporary file and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some file systems cannot sync a folder; a file that cannot sync is an error
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(target: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `target`, renamed over it only when the block succeeds.

    The file gets the usual umask-derived mode, not mkstemp's owner-only one:
    checkpoints, exports and predictions are meant to be shared.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(target.parent, directory=True)


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Replace `target` with `text` (UTF-8) in one step."""
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
