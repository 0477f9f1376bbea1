"""A component's parameters written on one line: `static(weights.age=2)`.

Two places write them so, and must agree: a sweep's run folder names
(`sweep_naming`) and the weighting column of `compare`. They live here, apart
from both, so that neither imports the other for three small functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def flat_items(section: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested mapping's leaves as (dotted key, value), in its order: `{weights: {age: 2}}` -> [("weights.age", 2)].

    How a component's parameters are written on one line: in a sweep's run folder names and in the weighting
    column of `compare`, so that both read `static(weights.age=2)`.
    """
    items: list[tuple[str, Any]] = []
    for key, value in section.items():
        if isinstance(value, Mapping) and value:
            items += flat_items(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def leaf_text(value: Any) -> str:
    """A parameter's value on one line, as YAML writes it (`true`, `null`, `2`); a list as `(a,b)`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(map(leaf_text, value)) + ")"
    if isinstance(value, Mapping):
        return call_text(str(value["name"]) if "name" in value else "",
                         [(k, leaf_text(v)) for k, v in flat_items(value) if k != "name"], always=True)
    return str(value)


def params_text(params: Mapping[str, Any]) -> str:
    """`weights.age=2,weights.gender=1`: flat parameters joined as `call_text` writes them inside its parentheses."""
    return _joined([(key, leaf_text(value)) for key, value in params.items()])


def call_text(name: str, items: Sequence[tuple[str, str]], always: bool = False) -> str:
    """`static(weights.age=2,weights.gender=1)`: a name and its parameters, compact; the name alone without any
    (unless `always`: an empty mapping reads `()`)."""
    if not items and not always:
        return name
    return f"{name}({_joined(items)})"


def _joined(items: Sequence[tuple[str, str]]) -> str:
    return ",".join(f"{key}={value}" for key, value in items)
