"""Error types that carry enough context to tell the user what to fix.

Every error hydranet raises on bad input derives from `HydranetError`; the CLI
prints its message without a traceback, so messages must name the file, field,
plugin or task at fault and suggest a way out.

An exception raised in a plugin's code becomes such a message too (`describe_raised` words it, with the file
and line of the plugin's code where it was raised); `hydranet --traceback` (or HYDRANET_TRACEBACK=1) has the
CLI print its whole traceback as well, for which `describe_raised` keeps the exceptions it worded (`raised_in`).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from types import TracebackType


class HydranetError(Exception):
    """Base class for errors that are the user's to fix, not bugs."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return " did you mean 'x'?" for the closest candidate, or "" when none is close (`closest_name`)."""
    best = closest_name(word, candidates)
    return f" did you mean '{best}'?" if best is not None else ""


def closest_name(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate closest to `word`, as it is spelt, or None when none is close (`difflib`'s `cutoff`).

    Case is ignored in the match (`DWA` is close to `dwa`): a name typed in
    another case is the commonest near miss.
    """
    spellings: dict[str, list[str]] = {}
    for candidate in candidates:
        spellings.setdefault(candidate.lower(), []).append(candidate)
    matches = difflib.get_close_matches(word.lower(), list(spellings), n=1, cutoff=cutoff)
    if not matches:
        return None
    same = spellings[matches[0]]  # names that differ only in case: the one closest as written
    return max(same, key=lambda candidate: difflib.SequenceMatcher(None, word, candidate).ratio())


def shown(value: object) -> str:
    """A value as a message quotes it (`'AdamW'`, `5`), cut short past 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def not_a_choice(given: object, choices: Sequence[object], noun: str = "choice") -> str:
    """"'adamm' is not a choice; did you mean 'adamw'? choices: adamw, sgd", for a field with fixed choices.

    The did-you-mean ignores case (`AdamW` is asked about `adamw`).
    """
    words = [str(choice) for choice in choices]
    hint = did_you_mean(given, words) if isinstance(given, str) else ""
    return f"{shown(given)} is not a {noun};{hint} {noun}s: {', '.join(words)}"


class UnknownNameError(HydranetError, KeyError):
    """A spec or command named a component that no plugin registered."""

    def __init__(self, kind: str, name: str, known: Sequence[str], candidates: Sequence[str] | None = None,
                 instead: str | None = None):
        """`known` are listed; the did-you-mean is among `candidates` (default: `known`; a registry adds its
        aliases); `instead` replaces it (" X is not built in; ... or use one of the", before the listing)."""
        self.kind, self.name, self.known = kind, name, list(known)
        hint = instead if instead is not None else did_you_mean(name, known if candidates is None else candidates)
        listing = ", ".join(sorted(known)) or "(none registered)"
        super().__init__(f"unknown {kind} '{name}';{hint} known {kind}s: {listing}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateNameError(HydranetError):
    """Two plugins registered the same component name; using it is ambiguous."""


class ComponentError(HydranetError):
    """A component rejected its parameters; `field` says which one, for the spec path."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class SpecError(HydranetError):
    """All problems found in one spec file, each with the path of the field at fault."""

    def __init__(self, problems: Sequence[tuple[str, str]], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        lines = [f"{count} problem{'s' if count != 1 else ''}{where}:"]
        lines += [f"  {path}: {message}" if path else f"  {message}" for path, message in self.problems]
        super().__init__("\n".join(lines))


class DataError(HydranetError):
    """A dataset could not be read: missing folder, no usable samples, strict-mode failure."""


class CheckpointError(HydranetError):
    """A checkpoint is missing, truncated, foreign, or needs a plugin that is absent."""


class RunFolderError(HydranetError):
    """A run cannot use its run folder: it holds another run (finished or not), files no run left, other files and
    no run (a new run's folder is its own), or a metrics.csv a resumed run cannot continue; another run is writing
    it; it cannot be written, or its disk is nearly full; or a checkpoint write failed (a full disk, a quota, a
    read-only or failing disk), which leaves the previous checkpoint intact.

    Its own class so that a notebook or a script that trains into a folder it names can catch this refusal (and
    pick another folder) without catching every HydranetError; the message says which folder and the ways on.
    """


class TrainingError(HydranetError):
    """Training cannot go on (for example, a non-finite loss)."""


class TrainingInterrupted(HydranetError):
    """A signal stopped training after a checkpoint was saved; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class InputError(HydranetError, TypeError, ValueError):
    """An argument of the Python API that it cannot use; the message says what was given and what is taken.

    It is a TypeError and a ValueError too, so code that catches those (as
    for any Python function given the wrong thing) catches it.
    """


#: Set (to 1) for the command line to print the whole traceback of an error, as `hydranet --traceback` does; a
#: launch's worker processes inherit it.
TRACEBACK_ENV = "HYDRANET_TRACEBACK"
#: the hint under an error raised in plugin code, when the traceback is not printed
TRACEBACK_HINT = "(raised in plugin code: `hydranet --traceback COMMAND ...` prints the whole traceback)"


def traceback_text(error: BaseException) -> str:
    """`error`'s whole traceback (with what caused it) as Python prints it: for `--traceback`."""
    import traceback

    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def wants_traceback() -> bool:
    """Whether errors are shown with their whole traceback: HYDRANET_TRACEBACK set to anything but 0/false/no/off."""
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


#: top-level packages whose frames are not a plugin's own code, beside the standard library's
NOT_PLUGIN_CODE = frozenset({"hydranet", "torch", "torchvision", "pluggy", "pydantic", "pydantic_core", "click",
                             "numpy", "PIL", "importlib_metadata", "typing_extensions", "_pytest", "pytest"})

#: (words, where, exception) of what plugin code raised, newest last: the exception only while a traceback is
#: wanted (or `keep`), since its frames hold on to whatever the code had (tensors of a batch)
_RAISED: deque[tuple[str, str, BaseException | None]] = deque(maxlen=32)


def _top_package(module: object) -> str | None:
    return module.split(".", 1)[0] if isinstance(module, str) and module else None


def _is_library(top: str) -> bool:
    """Whether a top-level package is hydranet's, a library's or the standard library's: not a plugin's code."""
    return top in NOT_PLUGIN_CODE or top in sys.stdlib_module_names


def code_package(code: object) -> str | None:
    """The top-level package of a plugin's function or class (`hydranet_oops`), or None for hydranet's own and
    library code: where `raised_where` looks first for the plugin's frame."""
    function = getattr(code, "__func__", code)
    module = getattr(function, "__module__", None)
    if not isinstance(module, str):
        module = getattr(type(code), "__module__", None)
    top = _top_package(module)
    return None if top is None or _is_library(top) else top


def _frames(traceback: TracebackType | None) -> list[tuple[str, str, int, str]]:
    """(module, file, line, function) of each frame of a traceback, outermost first."""
    found = []
    while traceback is not None:
        frame = traceback.tb_frame
        found.append((str(frame.f_globals.get("__name__", "")), frame.f_code.co_filename, traceback.tb_lineno,
                      frame.f_code.co_name))
        traceback = traceback.tb_next
    return found


def _shown_file(path: str) -> str:
    """A file as a message names it: relative to the working folder when under it, else as it is."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith(os.pardir) else relative


def raised_where(error: BaseException, package: str | None = None) -> str:
    """"at src/hydranet_oops/plugin.py:7 in bins_of": the innermost frame of plugin code in `error`'s traceback.

    That is the innermost frame of `package` (the plugin's top-level package) where it has one, else the
    innermost frame outside hydranet, torch, the libraries they use and the standard library; "" when there
    is none (hydranet's own code raised, or a builtin). Cheap: it reads the traceback, no source.
    """
    frames = _frames(error.__traceback__)
    if package:
        own = [f for f in frames if _top_package(f[0]) == package]
        if own:
            frames = own
    plugin = [f for f in frames if not _is_library(_top_package(f[0]) or "")]
    if not plugin:
        return ""
    _, file, line, function = plugin[-1]
    return f"at {_shown_file(file)}:{line}" + (f" in {function}" if function != "<module>" else "")


def describe_raised(error: BaseException, package: str | None = None, *, keep: bool = False) -> tuple[str, str]:
    """("KeyError: 'bins'", "at src/hydranet_oops/plugin.py:7 in bins_of"): what plugin code raised, and where
    (`raised_where`; "" where not known, and for a SyntaxError, whose words say where).

    It is remembered, with the exception where a traceback is wanted (or `keep`: a plugin's import, whose
    frames hold nothing big), for the CLI to find again in the message that tells of it (`raised_in`).
    """
    text = str(error)
    if isinstance(error, SystemExit):  # plugin code that ends the process: say so, not "SystemExit: 0"
        words = f"sys.exit({error.code!r}), which would end hydranet"
    else:
        words = f"{type(error).__name__}: {text}" if text.strip() else type(error).__name__
    where = "" if isinstance(error, SyntaxError) else raised_where(error, package)
    _RAISED.append((words, where, error if keep or wants_traceback() else None))
    return words, where


def plugin_raised(error: BaseException, package: str | None = None, *, keep: bool = False) -> str:
    """"KeyError: 'bins' (at src/hydranet_oops/plugin.py:7 in bins_of)": `describe_raised` in one phrase."""
    words, where = describe_raised(error, package, keep=keep)
    return f"{words} ({where})" if where else words


def raised_in(message: str) -> list[tuple[str, BaseException | None]]:
    """What plugin code raised that `message` tells of: "KeyError: 'bins' (at ...)", each once, oldest first, with
    the exception, or None where it was not kept.

    The message is text (a recorded load error, an error's words), so an exception is known in it by what
    `describe_raised` said of it: its words and, where known, where it was raised (a message may hold them
    apart: "... raised KeyError: 'bins' (on sample 3). Fix ... Raised at ..."). Where alone would take two
    exceptions raised at one line (a helper that raises for each bad field) for each other, and print both
    tracebacks under each message. An exception said alike at the same place is told of once, the newest kept.
    """
    found: dict[str, BaseException | None] = {}
    for words, where, error in _RAISED:
        if words in message and where in message:
            said = f"{words} ({where})" if where else words
            found[said] = error if error is not None else found.get(said)
    return list(found.items())
