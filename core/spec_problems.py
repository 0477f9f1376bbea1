"""Spec problems in a user's words: pydantic's ValidationErrors as (path, message) pairs.

Paths are written as in a spec (`tasks[1].params.num_clases`), without
pydantic's union-member tags; an unknown key gets a did-you-mean, looked for
in its own section and in the others (`epochs` at the top level is
train.epochs); a union field's errors become one problem; pydantic's type
words become YAML's ("a mapping", not "a valid dictionary").
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from hydranet.core.errors import did_you_mean, not_a_choice, shown
from hydranet.core.params_listing import bound_text
from hydranet.core.spec_models import COMPONENT_SECTIONS, AugmentSection, DataSection, Spec, TrainSection


def format_path(loc: Sequence[Any]) -> str:
    """("tasks", 1, "label") -> tasks[1].label; keys that are not plain words are quoted."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        key = str(part) if re.fullmatch(r"[A-Za-z0-9_-]+", str(part)) else repr(str(part))
        text += f".{key}" if text else key
    return text


def _model_at(model: type[BaseModel] | None, loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc` (to list its valid keys)."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _model_in(field.annotation)
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


#: Section path -> the keys it holds itself ("" is the top level), for keys written in the wrong section.
_SECTION_KEYS = {"": list(Spec.model_fields), "train": list(TrainSection.model_fields),
                 "augment": list(AugmentSection.model_fields),
                 "data": [k for k in DataSection.model_fields if k != "name"]}


def unknown_field_message(key: str, known: Sequence[str], section: str, about: str = "") -> str:
    """"unknown field; did you mean ...? valid fields: ..." for `key` in `section` (a path; "" = top level).

    A key that is closer to one of another section's keys than to any of its
    own section's is suggested there, with its path: `data.batchsize` is
    train.batch_size, `epochs` at the top level is train.epochs. `about` goes
    before the list of valid fields (why the section takes no such key).
    """
    def closeness(word: str) -> float:
        return difflib.SequenceMatcher(None, key, word).ratio()

    own = max(known, key=closeness, default=None)
    own_score = closeness(own) if own is not None else 0.0
    hint = f" did you mean '{own}'?" if own_score >= 0.6 else ""
    if section in _SECTION_KEYS:
        elsewhere = [(closeness(word), f"{other}.{word}" if other else word)
                     for other, words in _SECTION_KEYS.items() if other != section for word in words]
        score, path = max(elsewhere, default=(0.0, ""))
        if score >= 0.6 and score > own_score:
            where = f"the {path.split('.')[0]} section" if "." in path else "the top level"
            hint = f" did you mean '{path}'? (it belongs in {where});"
    listing = f" valid fields: {', '.join(known)}" if known else ""
    return f"unknown field;{hint}{about}{listing}"


def _union_members(annotation: Any) -> list[Any]:
    """The members of a union that pydantic tags in error paths (two or more besides None), else []."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return members if len(members) > 1 else []


def _member_named(members: Sequence[Any], tag: str) -> Any:
    """The union member pydantic's tag names: 'float', "literal['auto']", 'dict[str,float]', 'TaskSection'."""
    word = tag.split("[", 1)[0].lower()
    for member in members:
        origin = typing.get_origin(member) or member
        if (getattr(origin, "__name__", None) or getattr(origin, "_name", None) or "").lower() == word:
            return member
    return None


def _untagged(model: type[BaseModel] | None, loc: Sequence[Any]) -> tuple[list[Any], int | None, Any]:
    """`loc` without pydantic's union-member tags (`head_lr.'dict[str,float]'.age` -> `head_lr.age`).

    Returns the clean path, the length of the path to the first union field
    it went through (None: none), so that one mistake in a union field is one
    problem, not one per member, and the annotation at the end of `loc` (None
    where it was lost on the way), for the choices of a Literal.
    """
    annotation: Any = model
    clean: list[Any] = []
    union_at = None
    for part in loc:
        members = _union_members(annotation)
        if members and isinstance(part, str):
            member = _member_named(members, part)
            if member is not None:
                union_at = len(clean) if union_at is None else union_at
                annotation = member
                continue
        clean.append(part)
        while typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        if members:  # an Optional field (X | None): follow X
            annotation = members[0] if len(members) == 1 else None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            annotation = field.annotation if field else None
        elif typing.get_origin(annotation) in (list, tuple, Sequence) and args:
            annotation = args[0]
        elif typing.get_origin(annotation) in (dict, Mapping) and len(args) == 2:
            annotation = args[1]
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
        else:
            annotation = None
    return clean, union_at, annotation


def _choices(annotation: Any) -> list[Any]:
    """The values of the Literals in `annotation` (`Literal["adamw", "sgd"]`, `Literal["auto"] | bool`)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [choice for member in typing.get_args(annotation) for choice in _choices(member)]
    return []


#: pydantic's words for a type, as a spec's author would say them.
_PLAIN_WORDS = {"a valid number": "a number", "a valid integer": "an integer", "a valid dictionary": "a mapping",
                "a valid list": "a list", "a valid string": "a string",
                "a valid boolean": "a boolean (true/false, yes/no, on/off)"}


def _expected(message: str) -> str:
    """'Input should be a valid number, unable to parse ...' -> 'a number'."""
    wanted = message.removeprefix("Input should be ").split(", unable", 1)[0].split(", got a number", 1)[0]
    return _PLAIN_WORDS.get(wanted, wanted)


def _merge_union_errors(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One problem per union field: the errors of the member the value looked like, else 'should be A or B'."""
    merged: list[dict[str, Any]] = []
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for item in items:
        if item["union_at"] is None:
            merged.append(item)
            continue
        key = tuple(item["clean"][:item["union_at"]])
        if key not in groups:
            groups[key] = []
            merged.append({"group": key})
        groups[key].append(item)
    result = []
    for item in merged:
        if "group" not in item:
            result.append(item)
            continue
        group = groups[item["group"]]
        depth = len(item["group"])
        deeper = [e for e in group if len(e["clean"]) > depth or e["type"] in ("extra_forbidden", "missing")]
        if deeper:  # the value had one member's shape (a mapping, say): its own errors say what is wrong
            result.extend(deeper)
            continue
        words = list(dict.fromkeys(_expected(e["msg"]) for e in group))
        first = group[0]
        given = first.get("input")
        choices = [str(choice) for e in group if e["type"] == "literal_error" for choice in _choices(e["annotation"])]
        hint = did_you_mean(given, choices) if isinstance(given, str) else ""
        result.append({**first, "type": "union", "clean": first["clean"][:depth],
                       "msg": f"should be {' or '.join(words)} (got {shown(given)})" + (f";{hint}" if hint else "")})
    return result


NAMED_SECTIONS = (*COMPONENT_SECTIONS, "tasks")

#: pydantic error types whose message becomes "should be <plain words> (got ...)"
PLAIN_TYPE_ERRORS = ("dict_type", "list_type", "float_parsing", "float_type", "int_parsing", "int_type",
                     "int_from_float", "bool_parsing", "bool_type", "string_type")

EMPTY = "is empty (nothing is indented under it)"


def _field_at(model: type[BaseModel] | None, loc: Sequence[Any]) -> FieldInfo | None:
    """The pydantic field at `loc` (for its description and default), or None."""
    owner = _model_at(model, loc[:-1]) if loc and isinstance(loc[-1], str) else None
    return owner.model_fields.get(loc[-1]) if owner else None


def _empty_section(model: type[BaseModel] | None, loc: Sequence[Any]) -> str:
    """A section or list left empty (`train:` alone, YAML's null): remove it for its defaults, or fill it in."""
    field = _field_at(model, loc)
    if field is None or not field.is_required():
        return f"{EMPTY}; remove the line to use the defaults, or indent its fields under it"
    return f"{EMPTY}, but it is required" + (f". {field.description}" if field.description else "")


#: pydantic's bound errors, worded as the type errors are: "should be at least 1 (got -1)"
BOUND_WORDS = {"greater_than_equal": ("at least", "ge"), "greater_than": ("greater than", "gt"),
               "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}


def pydantic_problems(error: ValidationError, model: type[BaseModel] | None, prefix: Sequence[Any] = (),
                      also_valid: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Turn pydantic's errors into (path, message) pairs, with did-you-mean on unknown keys.

    `also_valid` are keys that share the top level with `model`'s fields without
    being among them: a component's params sit next to its section's own keys
    (`data.strict` beside the dataset's `root`), so a misspelling of either must
    be suggested, and both listed. pydantic's union-member tags are dropped from
    paths, and a union field's errors merged into one problem.
    """
    items = []
    for item in error.errors():
        clean, union_at, annotation = _untagged(model, item["loc"])
        items.append({**item, "clean": clean, "union_at": union_at, "annotation": annotation})
    problems = []
    for item in _merge_union_errors(items):
        loc = list(item["clean"])
        message = item["msg"]
        at_top = not prefix and len(loc) >= 1
        if item["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            known = [n for n in owner.model_fields] if owner else []
            if len(loc) == 1:
                known += [n for n in also_valid if n not in known]
            message = unknown_field_message(str(loc[-1]), known, format_path([*prefix, *loc[:-1]]))
        elif item["type"] == "missing":
            field = _field_at(model, loc)
            # a sentence apart: "data: required field missing: The dataset: its name" piled up colons
            message = "required field missing" + (f". {field.description}" if field and field.description else "")
        elif (item["type"] in ("model_type", "dict_type", "list_type") and item.get("input", "") is None
              and loc and isinstance(loc[-1], str)):  # `train:` with nothing indented under it
            message = _empty_section(model, loc)
        elif item["type"] == "model_type":  # pydantic names its own class: "... or instance of TaskSection"
            what = "a name or a mapping of fields" if at_top and loc[0] in NAMED_SECTIONS else "a mapping of fields"
            given = item.get("input")
            colon = re.fullmatch(r"([A-Za-z_]\w*) \S.*", given) if isinstance(given, str) else None
            message = f"should be {what} (got {shown(given)})" + (
                f"; is a ':' missing after '{colon[1]}'?" if colon else "")
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")  # our validators' own words need no pydantic label
        elif item["type"] == "bool_number":  # `registry.strict_params`' words say what was given
            pass
        elif at_top and loc == ["tasks"] and item["type"] == "list_type":
            message = (f"should be a list of tasks, one name or mapping each (`tasks: [age, gender]`); "
                       f"got {shown(item.get('input'))}")
        elif at_top and loc == ["tasks"] and item["type"] == "too_short":
            message = "needs at least one task (`tasks: [age]`)"
        elif item["type"] == "union":
            pass
        elif item["type"] == "literal_error" and _choices(item["annotation"]):
            message = not_a_choice(item.get("input"), _choices(item["annotation"]))
        elif item["type"] in BOUND_WORDS and item.get("ctx"):  # pydantic's "greater than or equal to 1"
            kind, key = BOUND_WORDS[item["type"]]
            limit = item["ctx"][key]
            limit_text = bound_text(limit) if isinstance(limit, int) else shown(limit)  # 2**63-1, as listed
            message = f"should be {kind} {limit_text} (got {shown(item.get('input'))})"
        elif item["type"] in PLAIN_TYPE_ERRORS:  # "a valid dictionary", "unable to parse string": pydantic's words
            message = f"should be {_expected(message)} (got {shown(item.get('input'))})"
        elif "input" in item and (not isinstance(item["input"], (dict, list)) or item["type"].endswith("_type")):
            message = f"{message} (got {shown(item['input'])})"
        problems.append((format_path([*prefix, *loc]), message))
    return problems
