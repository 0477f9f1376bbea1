"""Filesystem places: the cache folder, and checks that a dataset's input exists.

One function decides where caches live, so every cache lands under one folder
that a user can move (`HYDRANET_CACHE`) or wipe without hunting for it. The
existence checks turn a mistyped path into a `DataError` that names the path
and the way out, rather than an empty dataset or a traceback.
"""

from __future__ import annotations

import errno
import os
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
        super().__init__(f"{what} {path} {state}; {hint}")
        self.what, self.path, self.state = what, path, state


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
    """`$HYDRANET_CACHE`, else `$XDG_CACHE_HOME/hydranet`, else `~/.cache/hydranet`.

    Nothing is created here: callers make the subfolder they need, so merely
    asking where the cache is never writes to the disk.
    """
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "hydranet"
    return Path("~/.cache").expanduser() / "hydranet"


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
