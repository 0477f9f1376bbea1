"""A sweep's run folder names: the swept values written as a safe, short file name, and read back.

`folder_name` names a combination's folder; `run_folder` finds it again
(under the older, unreadable name too); `named_by` tells whether a folder's
name is one a sweep of given keys would make, so that a sweep does not mix
its runs with another's. Kept apart from the sweep's planning and running,
which only ask for a name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hydranet.core.overrides import parse_value
from hydranet.core.param_text import call_text, flat_items, leaf_text

if TYPE_CHECKING:
    from hydranet.core.sweep import Combination

#: a run folder's name is the swept values as written when it is made of these characters (and short)
_SAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
MAX_NAME = 100


def folder_name(settings: Sequence[tuple[str, str]], readable: bool = True) -> str:
    """`weighting=dwa,train.seed=1`: the swept values as written, when they make a safe, short file name.

    Otherwise (a `/`, a space, braces, a long value) the characters that are
    not safe on every file system, or in a shell's glob, become `_` and a
    hash of the exact values keeps two such names apart. A mapping or list
    value is written `readable` (`_value_name`): `{name: static, weights:
    {age: 2}}` names its folder `weighting=static(weights.age=2)-<hash>`,
    where it was `weighting=_name_static,_weights_age_2_-<hash>` before
    (`readable=False`, what `run_folder` still finds). A scalar value's name
    is the same either way.
    """
    raw = ",".join(f"{key}={value}" for key, value in settings)
    shown = ",".join(f"{_SAFE.sub('_', key)}={_value_name(value) if readable else _SAFE.sub('_', value)}"
                     for key, value in settings)
    safe = shown.strip("._-") or "run"
    if safe == raw and len(raw) <= MAX_NAME:
        return raw
    return f"{safe[:MAX_NAME]}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


def _value_name(text: str) -> str:
    """One swept value in a folder name: a scalar as written (unsafe characters `_`, as ever); a mapping as its
    `name` and its other keys, dotted, `static(weights.age=2,weights.gender=1)`; a list as `(a,b)`.

    Only the parentheses are added to the safe characters, and only here: a
    scalar holding one is named as before, so an existing run is found again.
    """
    try:
        value = parse_value(text)
    except yaml.YAMLError:
        value = text
    return _readable(value) if isinstance(value, (Mapping, list)) else _SAFE.sub("_", text)


def _readable(value: Any) -> str:
    """`_value_name` of a value read: mappings and lists written out, each scalar in them made safe."""

    if isinstance(value, Mapping):
        name = value.get("name")
        named = isinstance(name, str) and bool(_SAFE.sub("", name))
        items = [(_SAFE.sub("_", str(key)), _readable(leaf)) for key, leaf in flat_items(value)
                 if not (named and key == "name")]
        return call_text(_SAFE.sub("_", name) if named else "", items, always=not named)
    if isinstance(value, list):
        return "(" + ",".join(map(_readable, value)) + ")"
    return _SAFE.sub("_", leaf_text(value))


def run_folder(root: Path, combination: Combination) -> Path:
    """The combination's run folder under `root`: its `folder_name`, or where only that exists the name a sweep
    gave it before values were named readably, so that a sweep continued over an older sweep folder finds its
    finished and stopped runs (skips, resumes) instead of training them again beside them."""
    path = root / combination.folder
    if not path.exists():
        older = root / folder_name(combination.settings, readable=False)
        if older.is_dir():
            return older
    return path


def named_by(name: str, keys: Sequence[str]) -> bool:
    """Whether a run folder's name is `folder_name`'s for some values of `keys`, in that order.

    A safe name is `k1=v1,k2=v2`; a long or unsafe one has its unsafe characters
    made `_` (a mapping value written out in parentheses, whose own commas do
    not part settings) and is cut to `MAX_NAME` before its hash: the keys are
    checked as far as they survive that.
    """
    hashed = re.fullmatch(r"(.+)-[0-9a-f]{8}", name)
    text = hashed.group(1) if hashed else name
    wanted = [_SAFE.sub("_", key) if hashed else key for key in keys]
    found = [piece.partition("=")[0] for piece in _settings_of(text)]
    if hashed and len(text) == MAX_NAME:  # cut short: the keys before the cut, and the start of the next
        head, last = found[:-1], found[-1]
        return len(found) <= len(wanted) and head == wanted[:len(head)] and wanted[len(head)].startswith(last)
    return found == wanted


def _settings_of(name: str) -> list[str]:
    """A folder name's `key=value` pieces: split at each comma before a key, but not inside a value's parentheses
    (`weighting=static(weights.age=2,weights.gender=1),train.seed=0` is two)."""
    pieces, depth, start = [], 0, 0
    for match in re.finditer(r"[()]|,(?=[A-Za-z_][A-Za-z0-9_.\[\]-]*=)", name):
        if match.group() in "()":
            depth = max(0, depth + (1 if match.group() == "(" else -1))
        elif depth == 0:
            pieces.append(name[start:match.start()])
            start = match.end()
    return [*pieces, name[start:]]
