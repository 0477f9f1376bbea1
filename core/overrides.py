"""`--set key.path=value` overrides, applied to a spec's raw data before validation.

Values are parsed as YAML (with YAML 1.2's booleans and numbers, see `yaml12`), so
`--set train.epochs=5` gives an int, `--set tasks[1].class_names=[no,yes]` a
list of two words, and `--set train.cuda_graphs=off` the word off. A component given by name alone
(`weighting: dwa`) is promoted to a mapping when a parameter is set on it, so
`--set weighting.temperature=4` works on either spelling.

Problems name where an override came from as the caller calls them: `--set`
on the command line, the `overrides` argument in Python (see `origin`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from hydranet.core import yaml12
from hydranet.core.errors import InputError, SpecError

#: how the command line names overrides; the Python API's default is its argument's name, "overrides"
CLI_OPTION = "--set"


#: `,KEY=` or ` KEY=` inside an override's value: several overrides joined into one string
#: ("train.epochs=1,train.lr=0.01", or "train.epochs=1 train.lr=0.01" quoted as one word); split before each
#: such `KEY=` to give them apart
_JOINED = re.compile(r"(?:,\s*|\s+)(?=[A-Za-z_][\w.\[\]]*\s*=)")

#: what an override looks like, as problems with one's form say
FORM = "KEY=VALUE"


def origin(option: str, override: str) -> str:
    """Where a problem came from: `--set train.epochs=x` on the command line, `overrides 'train.epochs=x'` in Python.

    An override whose value holds `,KEY=` or ` KEY=` is most likely several
    overrides joined by commas or spaces, which is one override whose value is
    the rest of the string: the words then say how to give them apart (`joined_hint`).
    """
    where = f"{option} {override}" if option.startswith("-") else f"{option} {override!r}"
    return where + joined_hint(option, override)


def joined_hint(option: str, override: str) -> str:
    """"; pass several overrides as a list, ..." for `train.epochs=1,train.lr=0.01` (or the same joined by a
    space), else ""."""
    key, equals, value = override.partition("=")
    if not equals or not _JOINED.search(value):
        return ""
    parts = [part.strip() for part in _JOINED.split(override.strip())]
    if option.startswith("-"):
        return f"; one {option} per override: " + " ".join(f"{option} {part}" for part in parts)
    return f"; pass several overrides as a list: {option}={parts!r}"


def key_origin(option: str, key: str) -> str:
    """A problem with one override's key or value: `--set train.epochs` on the command line, `overrides (train.epochs)`."""
    return f"{option} {key}" if option.startswith("-") else f"{option} ({key})"


def override_list(overrides: str | Iterable[str], option: str = "overrides", form: str = "KEY=VALUE",
                  example: str = "train.epochs=5") -> list[str]:
    """Overrides given one or as a list, as a list: one "KEY=VALUE" string is one override, not its letters.

    Anything else is refused in the words of the argument `option`, with `form`
    and `example` saying what it takes (evaluating a checkpoint takes data keys only).
    """
    from hydranet.core.image_input import given

    if isinstance(overrides, str):
        return [overrides]
    wrong: Any = overrides
    if isinstance(overrides, Iterable) and not isinstance(overrides, (bytes, Mapping)):
        items = list(overrides)
        if all(isinstance(item, str) for item in items):
            return items
        wrong = next(item for item in items if not isinstance(item, str))
    raise InputError(f"{option} are '{form}' strings, one or a list (e.g. {option}='{example}'); got {given(wrong)}")



def parse_value(text: str) -> Any:
    """An override's value as `--set` reads it (YAML 1.2; nothing at all is the empty string).

    One function, so that `--sweep` (core/sweep.py) reads each of its values exactly as `--set` would.
    Raises yaml.YAMLError; `yaml12.error_message` words it.
    """
    return yaml12.load(text) if text.strip() else ""


def value_text(value: Any) -> str:
    """A Python value written as `--set` text that `parse_value` reads back as the same value.

    The Python API's sweep values go through it, so that they are applied (and name their run
    folders) as the command line's would be: "off" stays the word off, 1e-3 a number.
    """
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, sort_keys=False, allow_unicode=True)
    return text.removesuffix("\n...\n").strip()


def parse_override_path(path: str) -> list[str | int]:
    """`tasks[1].label` or `tasks.1.label` -> ["tasks", 1, "label"]."""
    parts: list[str | int] = []
    for piece in path.replace("[", ".").replace("]", "").split("."):
        if piece == "":
            raise ValueError(f"empty key in '{path}'")
        parts.append(int(piece) if piece.isdigit() else piece)
    return parts


def form_problem(override: str, example: str = "train.epochs=5") -> str | None:
    """What is wrong with an override's form (`train.epochs` without `=VALUE`), or None.

    One check for both callers: `apply_overrides` reports it as a spec problem (the Python API's
    `overrides`), the command line's --set as a usage error before any spec is read (core/cli_types.py).
    """
    key, sep, _ = override.partition("=")
    if sep and key.strip():
        return None
    return f"'{override}' is not of the form {FORM} (e.g. {example})"


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str], option: str = CLI_OPTION) -> dict[str, Any]:
    """Apply `KEY=VALUE` overrides to a copy of `raw`: each KEY a path (`train.epochs`, `tasks[1].label`), each
    VALUE parsed as YAML; problems name `option`."""
    result = copy.deepcopy(raw)
    problems = []
    for override in overrides:
        key, sep, text = override.partition("=")
        problem = form_problem(override)
        if problem is not None:
            problems.append((option, problem))
            continue
        try:
            path = parse_override_path(key.strip())
            value = parse_value(text)
        except ValueError as error:
            problems.append((key_origin(option, key), str(error)))
            continue
        except yaml.YAMLError as error:
            problems.append((key_origin(option, key), f"the value is {yaml12.error_message(error, text)}"))
            continue
        try:
            _set_path(result, path, value)
        except (KeyError, IndexError, TypeError) as error:
            problems.append((key_origin(option, key), f"cannot set this path: {error}"))
    if problems:
        raise SpecError(problems)
    return result


def _set_path(node: Any, path: list[str | int], value: Any) -> None:
    for depth, key in enumerate(path[:-1]):
        following = path[depth + 1]
        if isinstance(node, list):
            _check_index(path[:depth], key, node, appending=False)
            if isinstance(node[key], str):  # `- age` becomes {name: age} to take a parameter
                node[key] = {"name": node[key]}
            node = node[key]
            continue
        child = node.get(key)
        if isinstance(child, str) and isinstance(following, str):  # `weighting: dwa` -> {name: dwa}
            child = node[key] = {"name": child}
        elif child is None:
            child = node[key] = {}
        node = child
    last = path[-1]
    if isinstance(node, list):
        _check_index(path[:-1], last, node, appending=True)
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[str(last)] = value
    else:
        raise TypeError(f"'{path[-2] if len(path) > 1 else path[0]}' is not a section")


def _check_index(where: list[str | int], key: str | int, node: list[Any], appending: bool) -> None:
    """`key` must be an index of the list `node` at path `where` (or, to append, its length)."""
    count = len(node)
    if appending:
        choices = f"0 to {count - 1}, or {count} to add an item" if count else "0, to add an item"
    else:
        choices = f"0 to {count - 1}" if count else "none: the list is empty"
    if not isinstance(key, int):
        name = ".".join(str(part) for part in where) or "it"
        raise IndexError(f"'{key}' is not an index; {name} is a list, so this needs a number: {choices}")
    if key >= count + appending:
        raise IndexError(f"list index {key} out of range: the list has {count} items ({choices})")
