"""Finding the file a CSV names when it is spelled otherwise on disk: another case, another Unicode form.

A CSV typed on one system names files copied from another: macOS writes names
decomposed (NFD), most other programs composed (NFC); Windows and macOS ignore
case, so a CSV made there may spell `A.JPG` for `a.jpg`. The `folder` dataset
asks this module only for a name not found as written, and words what it finds.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from pathlib import Path, PurePath


def nfc(name: str) -> str:
    """A name in Unicode's NFC form: macOS writes file names decomposed (NFD: "e" then a combining accent), most
    editors and spreadsheets composed (NFC: one "é"), and Linux keeps the bytes as written."""
    return unicodedata.normalize("NFC", name)


def folded(name: str) -> str:
    """A name as a case-insensitive file system (Windows, macOS) compares it, and in NFC as `nfc`."""
    return nfc(name).casefold()


class NameListings:
    """Folders' names by a spelling key (`nfc`, `folded`), to find the file a CSV names in another spelling.

    A CSV typed on one system names files copied from another in a form that
    is not there: decomposed on macOS, composed elsewhere; in another case on
    Windows and macOS, whose file systems ignore case. Used only for a name not
    found as written, so a CSV whose names are all there lists no folder; and
    each folder is listed once, so a CSV whose every row misses does not list
    one folder per row.
    """

    def __init__(self) -> None:
        self._names: dict[Path, list[str]] = {}
        self._keyed: dict[tuple[Path, Callable[[str], str]], dict[str, list[str]]] = {}

    def matches(self, folder: Path, name: str, key: Callable[[str], str]) -> list[Path]:
        """The files whose path below `folder` is `name`, each part not there as written matched by its `key`.

        Every part counts, not only the file's own name: `HOUSE2/FLOOR0/IMG_030.JPG` finds
        `house2/floor0/img_030.jpg`. A part with several matches (`a.jpg` and `A.jpg`) gives each.
        """
        found = [folder]
        for part in PurePath(name).parts:
            found = [base / other for base in found
                     for other in ([part] if os.path.lexists(base / part) else self._by(base, key).get(key(part), []))]
        return [path for path in found if path.is_file()]

    def _by(self, folder: Path, key: Callable[[str], str]) -> dict[str, list[str]]:
        """`folder`'s names by their `key` (several when two names share one); {} if it cannot be listed."""
        if (folder, key) not in self._keyed:
            if folder not in self._names:
                try:
                    self._names[folder] = sorted(os.listdir(folder))
                except OSError:
                    self._names[folder] = []
            keyed: dict[str, list[str]] = {}
            for name in self._names[folder]:
                keyed.setdefault(key(name), []).append(name)
            self._keyed[folder, key] = keyed
        return self._keyed[folder, key]


def path_below(path: Path, folder: Path) -> str:
    """`path` as a CSV names it: relative to `folder` when it is in it, else whole."""
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


def spelled(name: str) -> str:
    """A name with its code points shown, so that two normalisations of it read apart: 'cafe\\u0301.jpg' (NFD)."""
    form = next((form for form in ("NFC", "NFD") if unicodedata.is_normalized(form, name)), "mixed")
    return f"{name!a} ({form})"
