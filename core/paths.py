"""Filesystem places: the cache folder, checks that a dataset's input exists, and why a file is not UTF-8.

One function decides where caches live, so every cache lands under one folder
that a user can move (`HYDRANET_CACHE`) or wipe without hunting for it. The
existence checks turn a mistyped path into a `DataError` that names the path
and the way out, rather than an empty dataset or a traceback. Every text file
a user hands over (a spec, a label CSV, a list of paths) is read as UTF-8; one
helper says why one that is not is not (UTF-16 from Windows, cp1252 from
Excel, or no text at all) and how to convert it, for all of them alike.
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

from hydranet.core.errors import DataError

CACHE_ENV = "HYDRANET_CACHE"
#: The cache's subfolders, one per kind of item: the decoded images (`decode_cache`), the full lists of data
#: problems (`data_report`) and the drawn faces (the synthetic dataset); `hydranet cache` lists and clears them.
DECODED_CACHE, REPORTS_CACHE, SYNTHETIC_CACHE = "decoded", "data-reports", "synthetic"
#: The file that marks a folder of drawn faces complete: here, so that `hydranet cache` knows it without
#: importing the plugin that draws them.
SYNTHETIC_MARKER = ".hydranet-synthetic.json"
#: What names a half-written folder: hidden, `.<folder>.partial-<random>`, beside the folder it is renamed to when
#: complete; `hydranet cache` counts such leftovers of a draw that was killed.
PARTIAL_INFIX = ".partial-"


class MissingPathError(DataError):
    """A dataset's input that is not there, with its parts kept for a caller that knows a better way out.

    A resumed run does: its spec cannot change, so the dataset's hint to set
    the path (--set data.root=DIR) does not apply to it.
    """

    def __init__(self, what: str, path: Path, state: str, hint: str):
        why = _why_missing(path) if state == "does not exist" else ""
        super().__init__(f"{what} {path} {state}{why}; {hint}")
        self.what, self.path, self.state = what, path, state


def _why_missing(path: Path) -> str:
    """What may have made a path that is not there: a Windows `\\`, a variable no shell expanded, or a relative
    path counted from another folder than the one meant ("" when none applies)."""
    written = str(path)
    slashed = Path(written.replace("\\", "/"))
    if "\\" in written and os.sep == "/" and slashed.exists():
        return f" (it is written with '\\', which is no path separator here, and {slashed} exists: write it with '/')"
    unexpanded = _UNEXPANDED.search(written)
    if unexpanded:
        return (f" (it holds {unexpanded.group()!r}, which nothing expanded: a spec is not read by a shell, so write "
                "the path out)")
    if not path.is_absolute():
        return f" in {Path.cwd()} (the current folder: a relative path counts from there)"
    return ""


def os_reason(error: OSError) -> str:
    """Why the system refused, in lower-case words and without the path (the message names it):
    `permission denied`, `not a directory`, `no space left on device`."""
    if isinstance(error, PermissionError):
        return "permission denied"
    text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]


def dead_link(path: str | os.PathLike) -> str | None:
    """Why a symbolic link leads to no file: "broken symbolic link (to T, which does not exist)", or a loop of
    links; None for anything else (a file, a folder, a link that works, nothing there)."""
    if not os.path.islink(path) or os.path.exists(path):
        return None
    target = os.readlink(path)
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"symbolic link loop (to {target}, which leads back to a link already followed)"
    return f"broken symbolic link (to {target}, which does not exist)"


def printable(text: str) -> str:
    """`text` with each byte of a file name that is not UTF-8 written as `\\xNN`.

    Python holds such a byte (a Latin-1 `caf\\xe9.jpg` copied from an old disk)
    as a lone surrogate, which no UTF-8 terminal, log or report can take: a
    message naming the file would fail to print. UTF-8 text is returned as it is.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decodes to: write it as an escape too
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$HYDRANET_CACHE`, else `$XDG_CACHE_HOME/hydranet`, else `~/.cache/hydranet`: always an absolute path.

    A relative `XDG_CACHE_HOME` is ignored, as the XDG spec says. A relative
    `HYDRANET_CACHE` (often `$HOME/hc` from a .env file that no shell expanded)
    would put a cache in each folder hydranet is started from, one that
    `hydranet cache list` from elsewhere never sees: it is made absolute and
    warned about once (`_relative_cache_warning`). Nothing is created here:
    callers make the subfolder they need, so merely asking where the cache is
    never writes to the disk.
    """
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        folder = Path(env[CACHE_ENV]).expanduser()
        if not folder.is_absolute():
            folder = folder.absolute()
            _warn_once(_relative_cache_warning(env[CACHE_ENV], folder))
        return folder
    xdg = Path(env.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    if not xdg.is_absolute():  # the XDG spec: "If [it] is relative, [it] should be ignored"
        xdg = Path("~/.cache").expanduser()
    return xdg / "hydranet"


#: A variable a shell would have expanded: `$HOME`, `${HOME}`, or Windows' `%USERPROFILE%`.
_UNEXPANDED = re.compile(r"\$\{?[A-Za-z_]\w*\}?|%[A-Za-z_]\w*%")
_warned: set[str] = set()


def _relative_cache_warning(value: str, folder: Path) -> str:
    """What a relative HYDRANET_CACHE did, and (if it names a variable no shell expanded) why it is relative."""
    unexpanded = _UNEXPANDED.search(value)
    why = (f"; it holds {unexpanded.group()!r}, which no shell expanded (a .env file or a quoted value keeps it as "
           f"written): write the folder out" if unexpanded else "; set it to an absolute path")
    return (f"{CACHE_ENV}={value!r} is a relative path, so the cache went to {folder}, below the current folder, "
            f"where `hydranet cache list` run from another folder does not look{why}")


def _warn_once(message: str) -> None:
    """A UserWarning, as core's other warnings are, but once per process: every cache user asks for the folder."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


#: The byte-order marks a UTF-16 file starts with: little-endian (Windows' "Unicode": Notepad, Excel's "Unicode
#: Text", PowerShell 5's `>`), and big-endian.
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: Control characters no text file holds (NUL and the like); tab, line breaks, form feed and DOS's end-of-file
#: mark (0x1a) are text.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x19\x1b-\x1f]")


def not_utf8(raw: bytes | None, save_as: str, error: UnicodeDecodeError | None = None) -> str:
    """Why a file's bytes are not UTF-8 text, and how to make them so: the words after the file's name.

    `raw` is the whole file (None if it cannot be read again: then `error`
    places the odd byte, without line and column). UTF-16 (a byte-order mark
    FF FE or FE FF, and text after it) is said to be UTF-16 and converted
    from UTF-16: `iconv -f cp1252` would corrupt it. Bytes that hold control
    characters no text holds are no text file. Anything else is most likely
    Windows' Latin-1, cp1252 (Excel's plain "CSV" in a Western locale writes
    `José` with the byte 0xE9): the first odd byte is placed by line and
    column, and read as cp1252 to say which character it was. The decoder's
    own position counts from the chunk it was given, not the file, hence
    the decoding again here. `save_as` names the UTF-8 format to save in
    (e.g. "a UTF-8 CSV (Excel: Save As, 'CSV UTF-8')").
    """
    advice = f"save it as {save_as}, or convert it"
    if raw is not None and raw.startswith(UTF16_BOMS) and _utf16_text(raw):
        return (f"is UTF-16 text (it starts with the bytes {raw[:2].hex(' ').upper()}, UTF-16's byte-order mark), "
                f"not UTF-8; {advice} (iconv -f utf-16 -t utf-8)")
    place = ""  # where in the file, when the whole file is at hand
    if raw is not None:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as whole:
            error = whole
            line_start = raw.rfind(b"\n", 0, error.start) + 1
            column = len(raw[line_start:error.start].decode("utf-8-sig" if line_start == 0 else "utf-8")) + 1
            line = raw.count(b"\n", 0, error.start) + 1
            place = f"line {line}, column {column}: "
    if error is None:  # not so: UTF-8 after all
        return "is UTF-8 text"
    control = _CONTROL.search((raw if raw is not None else error.object).decode("latin-1"))
    if control is not None:
        return (f"is not a text file (byte {error.start} is not UTF-8, and byte {control.start()} is "
                f"{control.group().encode('latin-1')!r}, a control character no text holds); is it the right file?")
    bad = error.object[error.start:error.end]
    character = bad.decode("cp1252", errors="replace")
    guess = f" ({character!r} in Latin-1/cp1252)" if character.isprintable() and "\ufffd" not in character else ""
    return (f"is not UTF-8 text ({place}the byte{'s' if len(bad) > 1 else ''} {bad!r}{guess}: {error.reason}); "
            f"{advice} (iconv -f cp1252 -t utf-8)")


def _utf16_text(raw: bytes) -> bool:
    """Whether `raw` (after a UTF-16 byte-order mark) reads as UTF-16 text: whole, no control characters, and
    some ASCII (every spec, CSV header and list of paths has some; binary bytes after FF FE read as none)."""
    try:
        text = raw.decode("utf-16")
    except UnicodeDecodeError:
        return False
    return not _CONTROL.search(text) and any(character.isascii() for character in text)


def path_spellings(name: str) -> list[str]:
    """A path as written and, where `\\` is no path separator, with `/` (`sub dir\\photo.jpg`, as Windows
    writes it in a CSV or a list of paths): the spellings to look for, in order."""
    return list(dict.fromkeys([name, name.replace("\\", "/") if os.sep == "/" else name]))


def partial_prefix(folder: Path) -> str:
    """The name prefix of a hidden, half-written copy of `folder` (for `tempfile.mkdtemp(prefix=...)`)."""
    return f".{folder.name}{PARTIAL_INFIX}"


def is_partial_name(name: str) -> bool:
    """Whether `name` is that of a half-written folder, one that `partial_prefix` began."""
    return name.startswith(".") and PARTIAL_INFIX in name


def existing_dir(path: str | Path, what: str, hint: str) -> Path:
    """`path` as a Path when it is a folder; otherwise a DataError that names it and says what to do.

    Datasets call this before listing, so a typo in a spec fails with the path
    in the message instead of as an empty dataset much later.
    """
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    raise MissingPathError(what, folder, "is not a folder" if folder.exists() else "does not exist", hint)


def existing_file(path: str | Path, what: str, hint: str) -> Path:
    """`path` as a Path when it is a file; otherwise a DataError that names it and says what to do."""
    file = Path(path).expanduser()
    if file.is_file():
        return file
    raise MissingPathError(what, file, "is not a file" if file.exists() else "does not exist", hint)
