"""YAML as specs are read: PyYAML's safe loader with YAML 1.2's booleans and floats.

PyYAML follows YAML 1.1, where the bare words yes, no, on, off, y and n are
booleans. In a spec that turns `cuda_graphs: off` into False (not the choice
"off") and `class_names: [no, yes]` into [False, True]. YAML 1.2, which the
current spec and most editors follow, has only true and false. Fields that
really are booleans still accept yes/no/on/off, because pydantic reads those
strings as booleans.

YAML 1.1 also wants a dot and a signed exponent in a float, so PyYAML reads
`lr: 1e-3` as the string "1e-3". YAML 1.2's core schema reads it, `1E5`,
`.5`, `+1.0e-3`, `.inf` and `.nan` as floats, as an editor checking the
spec's JSON Schema does.

Integers follow YAML 1.2 too: `012` is twelve (YAML 1.1: octal ten), octal
is written `0o12` and hex `0x1F`; `1_000` and `1:30` are not numbers.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

BOOL_TAG = "tag:yaml.org,2002:bool"
FLOAT_TAG = "tag:yaml.org,2002:float"
INT_TAG = "tag:yaml.org,2002:int"

#: YAML 1.2 core schema integers: decimal, 0o octal, 0x hex.
INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")

#: YAML 1.2 core schema floats, less the plain integers that its int pattern takes first.
FLOAT = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?
                       |[-+]?[0-9]+[eE][-+]?[0-9]+
                       |[-+]?\.(?:inf|Inf|INF)
                       |\.(?:nan|NaN|NAN))$""", re.X)


class SpecLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` whose only booleans are true and false (any case), and whose numbers are YAML 1.2's."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        if text.startswith(("0o", "0x", "0b")):  # 0b only when tagged !!int: it has no implicit form
            return int(text, 0)
        return int(text, 10)  # a leading zero is not octal in YAML 1.2


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (BOOL_TAG, FLOAT_TAG, INT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
SpecLoader.add_implicit_resolver(INT_TAG, INT, list("-+0123456789"))
SpecLoader.add_implicit_resolver(FLOAT_TAG, FLOAT, list("-+.0123456789"))
SpecLoader.add_constructor(INT_TAG, SpecLoader.construct_yaml_int)


def load(text: str) -> Any:
    """One YAML document, read with YAML 1.2's booleans and floats."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 (SpecLoader is a SafeLoader)


def error_message(error: yaml.YAMLError, value: str | None = None) -> str:
    """PyYAML's multi-line complaint as one line, with what usually causes it.

    "invalid YAML at line 3, column 9: ...; usually a line indented ..." for a
    file; for one value (`value`, a --set's text on one line) the column is
    counted in it: "invalid YAML at column 3 of '[1': ...".
    """
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or " ".join(str(error).split())
    if mark is None:
        where = ""
    elif value is not None and "\n" not in value:
        where = f" at column {mark.column + 1} of {value!r}"
    else:
        where = f" at line {mark.line + 1}, column {mark.column + 1}"
    return f"invalid YAML{where}: {problem}{_hint(problem)}"


def _hint(problem: str) -> str:
    """What usually causes PyYAML's terser complaints."""
    if "'\\t'" in problem:
        return "; YAML indents with spaces, not tabs"
    if "mapping values are not allowed" in problem:
        return "; usually a line indented differently from the lines around it, or an unquoted value with ': ' in it"
    if "block" in problem:
        return "; usually a line indented differently from the lines around it"
    if problem.startswith("expected ',' or"):
        return "; a list [...] or mapping {...} is not closed, or two of its items lack a ',' between them"
    return ""
