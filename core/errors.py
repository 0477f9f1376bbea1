"""Error types that carry enough context to tell the user what to fix.

Every error hydranet raises on bad input derives from `HydranetError`; the CLI
prints its message without a traceback, so messages must name the file, field,
plugin or task at fault and suggest a way out.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


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

    def __init__(self, kind: str, name: str, known: Sequence[str]):
        self.kind, self.name, self.known = kind, name, list(known)
        hint = did_you_mean(name, known)
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
