"""Whole-file writes: a reader sees the old file or the new one, never half of either.

Checkpoints, the run folder's text files, exports and prediction files all
go through `atomic_file`: write beside the target under a temporary name,
flush it to disk, rename it over the target, then flush the folder so the
rename itself survives a crash. A failure (a full disk, an exception,
Ctrl-C) removes the temporary file and leaves the target as it was.

A target whose folder cannot hold it (`--out small.yaml/p.csv`, a read-only
or virtual folder) is an `OutputError` naming that folder, not a traceback;
commands that compute for a while first call `writable_folder` so a bad
`--out` is refused before the work, not after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hydranet.core.errors import HydranetError
from hydranet.core.paths import printable


class OutputError(HydranetError, OSError):
    """The folder of an output file cannot be made or written to.

    Also an OSError, so code that caught the underlying OSError still does.
    """


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


def _why_unwritable(folder: Path, error: OSError) -> str:
    """The reason in the user's terms: mkdir says "File exists" when a file stands where a folder must."""
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                return "it is a file, not a folder" if place == folder else f"{place} is a file, not a folder"
            break
    if error.errno == errno.ENOENT and folder.is_dir():  # /proc, /sys: the folder is there but takes no files
        return "the folder does not accept new files"
    return error.strerror or str(error)


def _temporary_beside(target: Path, suffix: str, hint: str) -> Path:
    """Make `target`'s folder and an empty temporary file in it, or an OutputError saying why not."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as error:
        raise OutputError(f"cannot write to the output folder {target.parent}: "
                          f"{_why_unwritable(target.parent, error)}. {hint}") from None
    os.close(fd)
    return Path(name)


def writable_folder(target: str | Path, hint: str = "") -> Path:
    """Make `target`'s folder and prove a file can be created there; an OutputError (ending in `hint`) if not.

    For commands that compute for minutes before writing (predict, export):
    checking first means a mistyped --out costs nothing.
    """
    target = Path(target)
    _temporary_beside(target, ".probe", hint or f"Choose another place for {target.name}.").unlink()
    return target.parent


@contextlib.contextmanager
def atomic_file(target: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `target`, renamed over it only when the block succeeds.

    The file gets the usual umask-derived mode, not mkstemp's owner-only one:
    checkpoints, exports and predictions are meant to be shared.
    """
    target = Path(target)
    tmp = _temporary_beside(target, suffix, f"Choose another place for {target.name}.")
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(target.parent, directory=True)


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Replace `target` with `text` (UTF-8) in one step.

    A file name that is not UTF-8 (Latin-1 bytes, which Python holds as
    lone surrogates) is written with its bytes escaped (`caf\\xe9.jpg`, as
    `paths.printable` writes it everywhere): the file is still written, every
    line in it, and stays UTF-8.
    """
    with atomic_file(target) as tmp:
        tmp.write_text(printable(text), encoding="utf-8")
    return Path(target)


def same_file(one: str | Path, other: str | Path) -> bool:
    """Whether two paths name one file (through links, `..` or another spelling); False if either is missing."""
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False
