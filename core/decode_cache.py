"""The decode cache's entries on disk: which data each one holds, which are stale, and removing them safely.

An entry is `decoded-KEY.u8` (the pixels) plus `decoded-KEY.json` (the
header, written last, so its presence marks the entry complete). KEY
hashes the file list, each file's size and mtime and the image size
(`decode.cache_key`), so every change to the data makes a new entry and
leaves the old one behind: hundreds of MB each on real data. The header
also records the entry's data folder (the common folder of its files) and
image size; a new entry *supersedes* the entries of the same folder and
image size, and writing it removes them (`prune_superseded`).

Removal is safe without locks because of three rules:

- **An entry used recently is kept.** A cache hit touches the header, and
  decoding writes the pixel file continuously, so an entry whose files were
  modified within `IN_USE_SECONDS` (15 minutes) may belong to a run that is
  decoding into it, has just written it, or is about to open it; it is
  never removed, whichever process asks. A run that mapped its entry
  earlier keeps reading it after removal: on POSIX an unlinked file lives
  on while it is mapped; where the system refuses (Windows), the entry is
  skipped.
- **The header goes first.** A reader that finds no header, or a header
  but no pixels, has a cache miss and decodes again (`load_cached`): at
  worst work is repeated, never wrong pixels read.
- **Half-written files are left to their writer.** A temporary file of an
  interrupted decode is removed only after `ORPHAN_SECONDS` (a day) without
  a write; a live decode writes its file every few seconds. Its name records
  its writer (`.decoded-KEY.PID@HOST.XXXXXXXX.tmp`, `atomic.writer_tag`), so
  the next decode of the same entry removes one whose writer was a process
  of this machine that is gone (killed with SIGKILL) at once
  (`atomic.remove_stale_temporaries`); one whose writer runs is kept.

Two datasets with different files in the same folder at the same image
size (two CSVs over one image folder) supersede each other: each run
whose last use is older than 15 minutes decodes again. That costs time,
never correctness, and keeps the cache to one entry per folder and size.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

#: An entry (or other cached item) modified or used this recently may be in use by a running process.
IN_USE_SECONDS = 15 * 60
#: A temporary file untouched this long belongs to a decode that was killed, not to one still running.
ORPHAN_SECONDS = 24 * 3600
PREFIX = "decoded-"
#: How a decode's temporary pixel file ends: `.decoded-KEY.XXXXXX.tmp`, hidden until it is complete.
PARTIAL_SUFFIX = ".tmp"


def entry_files(cache_dir: Path, key: str) -> tuple[Path, Path]:
    """The header and the pixel file of the entry for `key`: `decoded-KEY.json` and `decoded-KEY.u8`."""
    return cache_dir / f"{PREFIX}{key}.json", cache_dir / f"{PREFIX}{key}.u8"


def partial_prefix(key: str) -> str:
    """The start of the temporary file a decode for `key` writes its pixels into (`orphans` lists them)."""
    return f".{PREFIX}{key}."


def data_folder(sources: Sequence[str]) -> str | None:
    """The folder that holds every source (their deepest common folder, absolute), or None when there is none.

    What "the same data" means for superseding: a dataset's root, whatever
    files in it are added, removed or changed.
    """
    if not sources:
        return None
    try:  # a set: most sources share their folder, and commonpath splits every path it is given
        return os.path.commonpath({os.path.dirname(os.path.abspath(source)) for source in sources})
    except ValueError:  # paths on different drives (Windows), or a mix of absolute and relative
        return None


@dataclass
class CacheEntry:
    """One decoded entry: its key, files, what it holds (from the header) and when it was last used."""

    key: str
    header: Path
    pixels: Path
    meta: dict

    @property
    def root(self) -> str | None:
        root = self.meta.get("root")
        return root if isinstance(root, str) else None

    @property
    def image_size(self) -> int | None:
        size = self.meta.get("image_size")
        if isinstance(size, int):
            return size
        shape = self.meta.get("shape")  # an entry written before headers named their size: (N, 3, S, S)
        return shape[-1] if isinstance(shape, list) and len(shape) == 4 and isinstance(shape[-1], int) else None

    @property
    def images(self) -> int | None:
        shape = self.meta.get("shape")
        return shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) else None

    @property
    def nbytes(self) -> int:
        return sum(_size(path) for path in (self.header, self.pixels))

    @cached_property
    def last_used(self) -> float:
        """The newest modification of its files: a cache hit touches the header, decoding writes the pixels.

        Read once, when first asked (`entries` sorts by it): `cache list` compares every entry with every
        other, and reading it on each comparison statted the files n² times. A run that touches the entry
        after that has it mapped already (`load_cached` maps, then touches), so removing it does no harm."""
        return max(modified_time(self.header), modified_time(self.pixels))

    def supersedes(self, other: "CacheEntry") -> bool:
        """Same data folder and image size, different files: `other` can never be a cache hit again."""
        return (other.key != self.key and self.root is not None and other.root == self.root
                and other.image_size == self.image_size)


def entries(cache_dir: Path) -> list[CacheEntry]:
    """Every complete entry in `cache_dir` (those with a readable header), newest use first."""
    found = []
    for header in _listing(cache_dir, f"{PREFIX}*.json"):
        key = header.name[len(PREFIX):-len(".json")]
        try:
            meta = json.loads(header.read_text())
        except (OSError, ValueError):
            meta = {}
        found.append(CacheEntry(key, *entry_files(cache_dir, key), meta if isinstance(meta, dict) else {}))
    return sorted(found, key=lambda entry: entry.last_used, reverse=True)


def orphans(cache_dir: Path) -> list[Path]:
    """Files of unfinished writes: temporary files, and pixel files without a header (killed before it)."""
    headless = [path for path in _listing(cache_dir, f"{PREFIX}*.u8")
                if not path.with_suffix(".json").exists()]
    return [*_listing(cache_dir, f".{PREFIX}*{PARTIAL_SUFFIX}"), *headless]


def in_use(mtime: float, now: float | None = None, seconds: float = IN_USE_SECONDS) -> bool:
    """Whether something modified at `mtime` may still be used by a running process."""
    return (time.time() if now is None else now) - mtime < seconds


def touch(header: Path) -> None:
    """Mark an entry as used now (a cache hit), so that no other process prunes it from under this run."""
    try:
        os.utime(header)
    except OSError:
        pass  # a read-only cache is still a cache: it just cannot be marked


def remove_entry(entry: CacheEntry, errors: list[OSError] | None = None) -> bool:
    """Remove the header, then the pixels; False (and the entry left whole or headless) when the system refuses.

    Why it refused is added to `errors`, when given (`hydranet cache clear` says it).
    """
    try:
        entry.header.unlink(missing_ok=True)
        entry.pixels.unlink(missing_ok=True)
    except OSError as error:  # Windows refuses to delete a file another process has mapped
        if errors is not None:
            errors.append(error)
        return False
    return True


def prune_superseded(cache_dir: Path, newest: CacheEntry, now: float | None = None) -> list[CacheEntry]:
    """Remove the entries `newest` supersedes and nobody used in the last IN_USE_SECONDS, and old orphans.

    Called right after `newest` is written. Returns the entries removed.
    """
    removed = [entry for entry in entries(cache_dir)
               if newest.supersedes(entry) and not in_use(entry.last_used, now) and remove_entry(entry)]
    for path in orphans(cache_dir):
        if not in_use(modified_time(path), now, ORPHAN_SECONDS):
            remove_file(path)
    return removed


def remove_file(path: Path, errors: list[OSError] | None = None) -> bool:
    """Remove a file; False when the system refuses (another user's file in a shared folder, a file mapped on
    Windows): pruning is housekeeping, and must never fail the decode that just succeeded. Why it refused is
    added to `errors`, when given."""
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        if errors is not None:
            errors.append(error)
        return False
    return True


def remove_tree(path: Path, errors: list[OSError] | None = None) -> bool:
    """Remove a cached folder (synthetic faces, data reports); False when it could not be removed whole.

    Why not is added to `errors`, when given."""
    def refused(function: object, where: str, info: object) -> None:
        error = info[1] if isinstance(info, tuple) else info  # onerror gets sys.exc_info(), onexc the error
        if errors is not None and isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
            errors.append(error)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=refused)
    else:  # Python 3.10 and 3.11
        shutil.rmtree(path, onerror=refused)
    return not path.exists()


def _listing(folder: Path, pattern: str) -> Iterator[Path]:
    try:
        return iter(sorted(folder.glob(pattern)))
    except OSError:
        return iter(())


def modified_time(path: Path) -> float:
    """When `path` was last written (0 when it is gone or unreadable: the oldest, so never "in use")."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
