"""The JSON Schema of spec files, for editors and `hydranet spec schema`; docs/reference/spec.md is made from it."""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from hydranet.core.plugins import Components, default_components
from hydranet.core.spec_models import COMPONENT_SECTIONS, TASK_NAME, BackboneSection, Spec, WeightingSection


#: The strings pydantic reads as booleans, in any case: YAML 1.2 reads `off` or `yes` as a word, and a
#: boolean field still takes it (`compile: off` is false).
BOOLEAN_WORDS = ("true", "false", "yes", "no", "on", "off", "y", "n", "t", "f", "1", "0")


def _any_case(word: str) -> str:
    """A regex matching `word` in any case, without inline flags (JSON Schema patterns are ECMA-262)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


class _SpecJsonSchema(GenerateJsonSchema):
    """pydantic's schema, with booleans as the loader reads them: true/false, a yes/no/on/off word, or 0/1."""

    def bool_schema(self, schema: Any) -> dict[str, Any]:
        words = "|".join(_any_case(word) for word in BOOLEAN_WORDS)
        return {"anyOf": [{"type": "boolean"},
                          {"type": "string", "pattern": f"^(?:{words})$", "description": "yes/no/on/off/true/false"},
                          {"enum": [0, 1]}]}


def spec_schema(components: Components | None = None, *, names: bool = True) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of what the loader accepts: every section's shape, short forms included.

    The short forms are those `Spec._names_as_components` and the field
    validators turn into the full form: a component section or a task given
    as its name alone (`weighting: dwa`, `- age`), `cuda_graphs: false` for
    "off", and booleans as words. Component parameters are whatever the named
    plugin takes, so the schema leaves them open (the loader's second pass
    checks them).

    With `names` (the default), the names registered in `components` (default:
    this process's plugins, as `hydranet spec schema` prints it) are the only
    ones allowed for the backbone, dataset, weighting, tasks and task kinds;
    `names=False` gives the shape alone, the same whatever is installed.
    """
    schema = Spec.model_json_schema(schema_generator=_SpecJsonSchema)
    properties = schema["properties"]
    defaults = {"backbone": BackboneSection.model_fields["name"].default,
                "weighting": WeightingSection.model_fields["name"].default}
    for key in COMPONENT_SECTIONS:
        prop = properties[key]
        reference = prop.pop("$ref")
        described = {"description": prop.pop("description")} if "description" in prop else {}
        properties[key] = {"anyOf": [{"type": "string", "description": f"the {key}'s name alone"},
                                     {"$ref": reference}],
                           **({"default": defaults[key]} if key in defaults else {}), **described, **prop}
    tasks = properties["tasks"]
    tasks["items"] = {"anyOf": [{"type": "string", "pattern": f"^{TASK_NAME.pattern}$",
                                 "description": "a registered task's name alone"}, tasks["items"]]}
    cuda_graphs = schema["$defs"]["TrainSection"]["properties"]["cuda_graphs"]
    choices = {key: cuda_graphs.pop(key) for key in ("type", "enum") if key in cuda_graphs}
    cuda_graphs["anyOf"] = [choices, {"const": False, "description": "the same as off"}]
    registered = _registered_names(components or default_components()) if names else []
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "hydranet spec",
        "description": "A hydranet spec file (YAML or TOML): the backbone, tasks, dataset, weighting and "
                       "training settings of one multi-task model. Unknown keys are errors. Component "
                       "sections (backbone, data, weighting, each task) also take the parameters of the "
                       "component they name: `hydranet list` names the components, the component reference "
                       "their parameters. " + (_NAMES if names else "") + _UNCHECKED,
        **{key: value for key, value in schema.items() if key not in ("title", "description")},
        **({"allOf": registered} if registered else {}),
    }


_NAMES = ("Component names (backbone, data, weighting, tasks and task kinds) must be among those registered "
          "when this schema was printed: installing or removing a plugin changes them, so print it again then. ")
_UNCHECKED = ("Not checked here, only by `hydranet spec validate FILE`: the components' parameters, a task "
              "named twice, the names in freeze and train.head_lr, and each weighting's own checks of the tasks.")


def _registered_names(components: Components) -> list[dict[str, Any]]:
    """The schema's name checks: each component section's name among those its registry holds."""
    def usable(registry: Any, ready_only: bool = False) -> list[str]:
        clashing = set(registry.conflicts())  # a name two plugins register is an error to use
        return sorted(name for entry in registry if not (ready_only and entry.needs_params)
                      for name in (entry.name, *entry.aliases) if name not in clashing)

    def named(allowed: list[str], mapping: dict[str, Any] | None = None) -> dict[str, Any]:
        """The name alone, or a mapping with that name (if/then/else, for "not one of [...]" as the error)."""
        return {"if": {"type": "string"}, "then": {"enum": allowed},
                "else": mapping or {"properties": {"name": {"enum": allowed}}}}

    tasks = usable(components.tasks)
    # a task mapping with a kind may take any name; without one, its name is what it is built from
    task = {"if": {"required": ["kind"], "properties": {"kind": {"type": "string"}}},
            "then": {"properties": {"kind": {"enum": tasks}}}, "else": {"properties": {"name": {"enum": tasks}}}}
    return [{"description": "names registered when this schema was printed",
             "properties": {"backbone": named(usable(components.backbones)),
                            "data": named(usable(components.datasets)),
                            "weighting": named(usable(components.weightings)),
                            "tasks": {"items": named(usable(components.tasks, True), task)}}}]
