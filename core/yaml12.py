"""YAML as specs are read: PyYAML's safe loader with YAML 1.2's booleans.

PyYAML follows YAML 1.1, where the bare words yes, no, on, off, y and n are
booleans. In a spec that turns `cuda_graphs: off` into False (not the choice
"off") and `class_names: [no, yes]` into [False, True]. YAML 1.2, which the
current spec and most editors follow, has only true and false. Fields that
really are booleans still accept yes/no/on/off, because pydantic reads those
strings as booleans.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

BOOL_TAG = "tag:yaml.org,2002:bool"


class SpecLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` whose only booleans are true and false (any case)."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load(text: str) -> Any:
    """One YAML document, read with YAML 1.2's booleans."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 (SpecLoader is a SafeLoader)
