"""A component's parameters as the listings show them: `hydranet list KIND NAME` and the docs reference pages.

Display code, apart from the registry (which registers and looks components up): both the command line
(core/cli_listing.py) and docs/generate.py word a parameter's type from its JSON Schema here, so that
`hydranet list` and the reference pages say the same thing, one as plain text and one as Markdown
(`TypeStyle`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from hydranet.core.errors import shown


def _as_is(text: str) -> str:
    return text


@dataclass(frozen=True)
class TypeStyle:
    """What differs between a type written as plain text (a terminal) and one in a Markdown table cell.

    `literal` wraps a const or enum value's JSON (`"mean"`, or `` `"mean"` `` in Markdown), `union` joins the
    choices of an anyOf or enum (a bare `|` would split a Markdown table's cell), and `ref` writes the name of a
    model the schema refers to (`$defs`), plain or as a link.
    """

    literal: Callable[[str], str] = _as_is
    union: str = " | "
    ref: Callable[[str], str] = _as_is


PLAIN = TypeStyle()

#: JSON Schema bound keys, in the order a type lists them, with how each is written
_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


def bound_text(value: Any) -> str:
    """A bound as a type writes it: a large power of two (or one less) as `2**63-1`, not its 19 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**32:
        for offset, suffix in ((0, ""), (1, "-1")):
            power = (abs(value) + offset).bit_length() - 1
            if abs(value) + offset == 2**power:
                return f"{'-' if value < 0 else ''}2**{power}{suffix}"
    return str(value)


def schema_type(prop: Mapping[str, Any], style: TypeStyle = PLAIN) -> str:
    """A short type for one JSON Schema property: `integer (>= 1)`, `"auto" | boolean`, `list of string (at
    least 1 item)`, in `style`'s words."""
    if "$ref" in prop:
        return style.ref(prop["$ref"].rsplit("/", 1)[-1])
    if "anyOf" in prop:
        return style.union.join(schema_type(p, style) for p in prop["anyOf"])
    if "const" in prop:
        return style.literal(json.dumps(prop["const"]))
    if "enum" in prop:
        return style.union.join(style.literal(json.dumps(v)) for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("items", {})
        inner = schema_type(items, style)
        several = len(items.get("anyOf", ())) > 1 or len(items.get("enum", ())) > 1
        text = f"list of ({inner})" if several else f"list of {inner}"  # not "list of string | number | null"
    elif kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        text = f"mapping of string to {schema_type(prop['additionalProperties'], style)}"
    else:
        text = "mapping" if kind == "object" else str(kind)
    bounds = [f"{op} {bound_text(prop[key])}" for key, op in _BOUNDS if key in prop]
    if "minItems" in prop:
        bounds.append(f"at least {prop['minItems']} item{'s' if prop['minItems'] != 1 else ''}")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def params_rows(model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of each parameter `model` takes, in a spec's words (`hydranet list KIND
    NAME`): its JSON Schema's, as the spec reference writes them (`number (>= 0)`, `"mean" | "sum"`)."""
    try:
        schema = model.model_json_schema()
    except Exception:  # a type JSON Schema cannot say (arbitrary_types_allowed): the annotations instead
        schema = None
    rows = []
    for name, info in model.model_fields.items():
        key = info.alias if isinstance(info.alias, str) else name
        prop = (schema or {}).get("properties", {}).get(key)
        kind = schema_type(prop) if prop is not None else _annotation_text(info.annotation)
        if info.is_required():
            default = "(required)"
        elif prop is not None and "default" in prop:
            default = json.dumps(prop["default"])
        else:
            default = shown(info.get_default(call_default_factory=True))
        rows.append((key, kind, default, " ".join((info.description or "").split())))
    return rows


def _annotation_text(annotation: Any) -> str:
    """A type annotation as a listing writes it where JSON Schema cannot say it: `Tensor`, `Optional[Tensor]`."""
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\btyping\.", "", str(annotation))


__all__ = ["PLAIN", "TypeStyle", "bound_text", "params_rows", "schema_type"]
