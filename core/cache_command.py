"""`hydranet cache list` and `hydranet cache clear`: what the cache folder holds, and getting the space back.

Runs prune the decode cache themselves (a new entry removes the ones it
supersedes, see `core/decode_cache.py`), but a user still needs to see
where hundreds of MB went and to clear entries of data that is gone. Both
commands follow the pruning's safety rule: an item used in the last
15 minutes may belong to a running process and is kept, and said to be.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import click

from hydranet.core.decode_cache import (IN_USE_SECONDS, CacheEntry, entries, in_use, modified_time, orphans,
                                        remove_entry, remove_file, remove_tree)
from hydranet.core.errors import HydranetError
from hydranet.core.paths import (CACHE_ENV, DECODED_CACHE, REPORTS_CACHE, SYNTHETIC_CACHE, SYNTHETIC_MARKER, cache_dir,
                                 is_partial_name, os_reason)
from hydranet.core.report import format_table, indent
from hydranet.core.wording import plural

IN_USE_MINUTES = IN_USE_SECONDS // 60


@click.group("cache")
def cache_group() -> None:
    """See and clear hydranet's cache folder.

    The cache holds each dataset's decoded images (one entry per data folder
    and image size; a run on changed files replaces its folder's entry), the
    full lists of data problems, and the drawn synthetic faces. Everything in
    it can be rebuilt: clearing it costs only the time to decode again. Its
    place is $HYDRANET_CACHE, else $XDG_CACHE_HOME/hydranet, else
    ~/.cache/hydranet.

    \b
    Examples:
      hydranet cache list
      hydranet cache clear
      hydranet cache clear --all
    """


@cache_group.command("list")
def list_command() -> None:
    """List what the cache holds and how much disk it takes.

    Each decoded-image entry is shown with its data folder, image size,
    number of images, disk space, last use and state: `superseded` (a newer
    entry holds the same folder and size) or `data folder gone`, and `in use`
    (used in the last 15 minutes: `clear` keeps it). The other items follow,
    counted.

    \b
    Example:
      hydranet cache list
    """
    folder = cache_dir()
    _check_readable(folder)
    decoded = entries(folder / DECODED_CACHE)
    click.echo(f"cache folder: {folder} (set {CACHE_ENV} to move it)")
    sizes = [entry.nbytes for entry in decoded]
    if decoded:
        now = time.time()
        rows = [[entry.root or "(written by an older hydranet)", _px(entry.image_size), _count(entry.images),
                 _mb(size), _ago(now - entry.last_used), _state(entry, decoded, now)]
                for entry, size in zip(decoded, sizes)]
        click.echo(f"decoded images ({plural(len(decoded), 'entry', 'entries')}):")
        click.echo(indent(format_table(["data folder", "size", "images", "disk", "last used", "state"], rows)))
    else:
        click.echo("decoded images: none")
    total = sum(sizes)
    for name, paths in _others(folder):
        if paths:  # a folder of synthetic faces is walked once, for its line and the total both
            size = sum(map(_disk, paths))
            total += size
            click.echo(f"{name}: {plural(len(paths), 'item')}, {_mb(size)}")
    click.echo(f"total: {_mb(total)}. Free it with: hydranet cache clear (--all for the synthetic faces too)")


@cache_group.command("clear")
@click.option("--all", "everything", is_flag=True,
              help="Also remove the synthetic faces (drawn again on next use). Stop runs on them first.")
def clear_command(everything: bool) -> None:
    """Remove the decoded images, unfinished decodes and data-problem lists.

    Items used in the last 15 minutes are kept: a running hydranet may be
    decoding into them or reading them. Each is decoded again when a run
    needs it.

    \b
    Examples:
      hydranet cache clear
      hydranet cache clear --all
    """
    folder = cache_dir()
    _check_readable(folder)
    now = time.time()
    decoded = entries(folder / DECODED_CACHE)
    freed = removed = kept = cleared = 0
    refused: list[tuple[Path, list[OSError]]] = []  # what the system would not remove, and why
    for entry in decoded:
        if in_use(entry.last_used, now):
            kept += 1
            continue
        size = entry.nbytes  # before removal, which takes the files' sizes with it
        errors: list[OSError] = []
        if remove_entry(entry, errors):
            freed, removed = freed + size, removed + 1
        else:
            refused.append((entry.header, errors))
    items = [path for name, paths in _others(folder) if everything or name != "synthetic faces" for path in paths]
    for path in items:
        if in_use(modified_time(path), now):
            kept += 1
            continue
        size = _disk(path)
        errors = []
        if remove_tree(path, errors) if path.is_dir() else remove_file(path, errors):
            freed, cleared = freed + size, cleared + 1
        else:
            refused.append((path, errors))
    click.echo(f"removed {plural(removed, 'decoded-image entry', 'decoded-image entries')} and "
               f"{plural(cleared, 'other item')} from {folder}, freeing {_mb(freed)}")
    if kept:
        them = "them" if kept > 1 else "it"
        click.echo(f"kept {plural(kept, 'item')} used in the last {IN_USE_MINUTES} minutes "
                   f"(a run may be using {them}); run this again once no hydranet is running to remove {them}")
    if refused:
        raise HydranetError(_refused_message(folder, refused))


def _check_readable(folder: Path) -> None:
    """Refuse a cache folder that is a file or cannot be listed: it would look empty, and clearing it do nothing.

    A folder that does not exist yet is fine (nothing is cached); so are its
    subfolders, each of which hydranet makes when it first writes there.
    """
    for place in (folder, *(folder / name for name in (DECODED_CACHE, REPORTS_CACHE, SYNTHETIC_CACHE))):
        try:
            with os.scandir(place):
                pass
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            raise HydranetError(f"the cache folder {place} is a file, not a folder; remove it, or set {CACHE_ENV} "
                                "to a folder for hydranet's cache") from None
        except OSError as error:
            raise HydranetError(f"cannot list the cache folder {place}: {os_reason(error)}; make it readable by "
                                f"this user, or set {CACHE_ENV} to a folder of your own") from None


def _refused_message(folder: Path, refused: Sequence[tuple[Path, Sequence[OSError]]]) -> str:
    """`could not remove 2 items from CACHE: permission denied (e.g. PATH)`, with a way out."""
    reasons = sorted({os_reason(error) for _, errors in refused for error in errors}) or ["the system refused"]
    first = refused[0][0]
    return (f"could not remove {plural(len(refused), 'item')} from {folder}: {', '.join(reasons)} (e.g. {first}); "
            "check that this user may delete files there, or that no other program holds them open")


def _others(folder: Path) -> list[tuple[str, list[Path]]]:
    """The cache's other items, by what they are: unfinished decodes, data-problem lists, synthetic faces.

    Only what hydranet itself writes there is listed, and so cleared: $HYDRANET_CACHE
    may be a folder that holds the user's own files too (a home or shared folder),
    and a symbolic link may point anywhere.
    """
    return [("unfinished decodes", orphans(folder / DECODED_CACHE)),
            ("data-problem lists", [path for path in _children(folder / REPORTS_CACHE) if _is_report(path)]),
            ("synthetic faces", [path for path in _children(folder / SYNTHETIC_CACHE) if _is_synthetic(path)])]


#: A data-problem list's name: the dataset's name and 12 hex digits of its place (`data_report.full_report_path`).
REPORT_NAME = re.compile(r".+-[0-9a-f]{12}\.txt")


def _is_report(path: Path) -> bool:
    """A data-problem list that hydranet wrote: a plain file (no link) named as `full_report_path` names them."""
    return REPORT_NAME.fullmatch(path.name) is not None and path.is_file() and not path.is_symlink()


def _is_synthetic(path: Path) -> bool:
    """A folder (no link) of drawn faces: complete (its marker), or the hidden partial folder of a draw."""
    if path.is_symlink() or not path.is_dir():
        return False
    return (path / SYNTHETIC_MARKER).is_file() or is_partial_name(path.name)


def _state(entry: CacheEntry, decoded: Sequence[CacheEntry], now: float) -> str:
    """Why an entry may be worth clearing (superseded by a newer one, its data folder gone), and whether it is in
    use: "superseded, in use" says both, since `clear` keeps an entry in use however stale it is."""
    states = []
    if any(newer.supersedes(entry) and newer.last_used > entry.last_used for newer in decoded):
        states.append("superseded")
    elif entry.root and not Path(entry.root).is_dir():
        states.append("data folder gone")
    if in_use(entry.last_used, now):
        states.append("in use")
    return ", ".join(states)


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _disk(path: Path) -> int:
    """Bytes a file or folder takes (0 when it is gone or unreadable)."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def _px(size: int | None) -> str:
    return f"{size}px" if size else "?"


def _count(images: int | None) -> str:
    return str(images) if images is not None else "?"


def _ago(seconds: float) -> str:
    """'5 minutes ago', '3 hours ago', '2 days ago'."""
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            return f"{plural(int(seconds // length), unit)} ago"
    return "just now"
