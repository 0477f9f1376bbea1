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

A temporary's name carries its writer (`.NAME.PID@HOST.XXXXXXXX.tmp`), so
that the ones a killed writer left (SIGKILL, a power cut: no `finally`
runs) can be told from one being written now and removed
(`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from hydranet.core.errors import HydranetError
from hydranet.core.paths import printable


class OutputError(HydranetError, OSError):
    """The folder of an output file cannot be made or written to.

    Also an OSError, so code that caught the underlying OSError still does.
    """


#: A temporary file untouched this long is left over from a killed writer, whoever wrote it.
STALE_SECONDS = 24 * 3600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def share(path: str | Path) -> None:
    """Give a file the usual umask-derived mode (0644 under umask 022), not mkstemp's owner-only 0600.

    Every file hydranet renames into place from a temporary goes through this, so that the files of one
    output (a decode cache entry's pixels and header, a checkpoint) all have one mode.
    """
    os.chmod(path, 0o666 & ~_umask())


def _pid_namespace() -> str:
    """Linux's id of this process's PID namespace ("pid:[4026531836]"); "" where there is none to read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except (OSError, AttributeError):
        return ""


def _host() -> str:
    """A short, file-name-safe tag of the PIDs this process can see: the machine (a cache or run folder may be
    shared between machines) and its PID namespace, since containers on one machine can share its host name
    (host networking) while each numbers its own processes: one must not take another's live writer for gone."""
    where = f"{socket.gethostname()}\0{_pid_namespace()}"
    return hashlib.blake2b(where.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()


def writer_tag() -> str:
    """`PID@HOST`, written into a temporary file's name so a later process can tell who wrote it.

    `stale_temporaries` removes a temporary whose writer is a process of this machine that is gone (killed
    while writing), and never one whose writer still runs.
    """
    return f"{os.getpid()}@{_host()}"


def _writer_gone(tag: str | None) -> bool:
    """Whether the writer named by a `writer_tag` is known to be dead: a process of this machine that no longer
    exists. Unknown (no tag, another machine, Windows, where signal 0 would end the process) is "not known"."""
    if tag is None or os.name == "nt":
        return False
    pid, _, host = tag.partition("@")
    if host != _host() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: alive, another user's; a PID out of range: unknown
        return False
    return False


def stale_temporaries(folder: str | Path, names: Iterable[str], *, older_than: float = STALE_SECONDS,
                      now: float | None = None) -> list[Path]:
    """The temporaries of the final files `names` in `folder` that a killed writer left: `.NAME.*.tmp`.

    `atomic_file` writes `report.csv` through `.report.csv.PID@HOST.XXXXXXXX.tmp` and renames it over
    `report.csv`; a writer killed with SIGKILL (or a power cut) leaves the temporary behind. One is stale when
    its writer (the PID in its name) was a process of this machine that no longer exists, or, whoever wrote it
    (an older hydranet's temporaries carry no PID; another machine's PID cannot be checked), when it was not
    written for `older_than` seconds. A temporary that a live process is writing right now is never stale:
    its PID is alive, and it is written continually. Temporaries of other names are never touched, nor
    files that do not end in `.tmp`.
    """
    folder = Path(folder)
    now = time.time() if now is None else now
    found = []
    for name in names:
        for path in sorted(folder.glob(f".{glob.escape(name)}.*.tmp")):
            rest = path.name[len(name) + 2:-len(".tmp")]
            match = re.fullmatch(r"(?:(\d+@[0-9a-f]{8})\.)?[^.]+", rest)  # mkstemp's random part has no dot
            if match is None:  # another name's temporary: `.a.b.XXXX.tmp` is `a.b`'s, not `a`'s
                continue
            try:
                modified = path.stat().st_mtime
            except OSError:
                continue  # renamed into place or removed by its writer meanwhile
            if _writer_gone(match.group(1)) or now - modified >= older_than:
                found.append(path)
    return found


def remove_stale_temporaries(folder: str | Path, names: Iterable[str], *,
                             older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove the temporaries that killed writers left for the files `names` in `folder` (`stale_temporaries`
    says which); the ones removed. For a command that opens a folder it writes into (a run folder, the decode
    cache): a file the system refuses to remove is left, silently, as housekeeping must not fail the command.
    """
    removed = []
    for path in stale_temporaries(folder, names, older_than=older_than):
        try:
            path.unlink()
        except OSError:  # gone meanwhile, or refused (another user's file in a shared folder)
            continue
        removed.append(path)
    return removed


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


def why_unwritable(folder: Path, error: OSError) -> str:
    """The reason in the user's terms: mkdir says "File exists" when a file stands where a folder must."""
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                return "it is a file, not a folder" if place == folder else f"{place} is a file, not a folder"
            break
    if error.errno == errno.ENOENT and folder.is_dir():  # /proc, /sys: the folder is there but takes no files
        return "the folder does not accept new files"
    return error.strerror or str(error)


_why_unwritable = why_unwritable  # its earlier, private name


def _temporary_beside(target: Path, suffix: str, hint: str) -> Path:
    """Make `target`'s folder and an empty temporary file in it, or an OutputError saying why not."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.{writer_tag()}.", suffix=suffix, dir=target.parent)
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
        share(tmp)
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
