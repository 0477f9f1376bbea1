"""Loading a spec: read it, apply --set overrides, check its shape, resolve its names.

Loading runs in two passes. The first checks the file's shape (sections,
types, unknown keys) against the models in `spec_models`. The second resolves
every component name through the registries and validates each component's
own parameters against the model its plugin registered. Problems from both
passes are collected and raised together as one `SpecError`, each with the
path of the field at fault and, for a misspelling, a did-you-mean (worded by
`spec_problems`).

Spec files are data (`spec_files` reads them): nothing in a spec can execute
code.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from torch import nn

from hydranet.core.errors import (ComponentError, DuplicateNameError, HydranetError, InputError, SpecError,
                                  UnknownNameError, did_you_mean, shown)
from hydranet.core.interfaces import Dataset, Task, Weighting, problem_of_task
from hydranet.core.plugin_calls import STAND_IN, PluginCall, Provenance, kind_of, provenance, record_provenance
from hydranet.core.metrics import Metric
from hydranet.core.overrides import CLI_OPTION, apply_overrides, origin, override_list, parse_override_path
from hydranet.core.plugins import Components, default_components
from hydranet.core.registry import Entry, describe_plugin
from hydranet.core.spec_files import MAX_SPEC_DEPTH, find_spec, nesting_depth, read_spec_file
from hydranet.core.spec_models import (COMPONENT_SECTIONS, TASK_NAME, BackboneSection, Component, DataSection, Spec,
                                       TaskSection, TrainSection, WeightingSection, monitor_problem)
from hydranet.core.spec_problems import EMPTY, format_path, pydantic_problems, unknown_field_message
from hydranet.core.spec_schema import spec_schema
from hydranet.core.weighting import check_state_registered


@dataclass
class ResolvedComponent:
    """A component section after its name and params were checked."""

    section: str
    entry: Entry
    params: BaseModel | None
    #: the plugin that registered it, as errors name it: "plugin 'shapes' (hydranet-shapes 0.3)"
    origin: str = ""

    def build(self, *args: Any, name: str | None = None) -> Any:
        """Call the plugin's factory with `args` and the validated params; `name`: the component's own (a task's).

        What the factory raises becomes a `ComponentError` naming the component and its plugin (a spec lists
        it as a problem); the built object remembers both, for later errors about its code.
        """
        kind = "dataset" if self.section == "data" else self.section
        who = Provenance(f"{kind} '{name or self.entry.name}'", self.origin or describe_plugin(self.entry.plugin))
        args = (*args, self.params) if self.params is not None else args
        fix = f"Fix its factory ({_factory_name(self.entry.factory)}), or leave it out of the spec"
        built = PluginCall("building", who, fix, ComponentError, hint=_call_hint(kind, self.params))(
            self.entry.factory, *args)
        if not getattr(self.entry.factory, STAND_IN, False):
            problem = returned_problem(kind, built)
            if problem:
                raise PluginCall("the factory of", who, fix, ComponentError).fault(problem)
        return record_provenance(built, who)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.entry.name, **(self.params.model_dump(mode="json") if self.params else {})}


METRICS_FIX = ("Return fresh hydranet.Metric objects by name from the task's metrics(), e.g. {'accuracy': "
               "Accuracy()}; a metric name starts with a letter and holds only letters, digits, '_' or '-' (it "
               "becomes the metrics.csv column val.<task>.<metric>); or leave the task out of the spec")


def metrics_problem(metrics: object) -> str | None:
    """What is wrong with what a task's `metrics()` returned, or None: a dict of Metric, named as tasks are."""
    if not isinstance(metrics, dict):
        return f"returned {kind_of(metrics)}; expected a dict of hydranet.Metric by name"
    for name, metric in metrics.items():
        if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
            return f"returned a metric named {shown(name)}"
        if not isinstance(metric, Metric):
            return f"returned {kind_of(metric)} as metric '{name}'; expected a hydranet.Metric"
    return None


#: what a factory of each kind must return, as `returned_problem` words it
_RETURNS = {"task": (Task, "a hydranet.Task"), "weighting": (Weighting, "a hydranet.Weighting"),
            "dataset": (Dataset, "a hydranet.Dataset")}
_BACKBONE = ("a hydranet.Backbone (an nn.Module) that sets self.out_features, the width of its features (an int), "
             "in __init__")


def returned_problem(kind: str, built: Any) -> str | None:
    """What is wrong with what the factory of a `kind` ("task", "backbone", ...) returned, or None.

    A task, weighting or dataset is an instance of its base class (hydranet.Task, ...): the engine calls the
    methods those give. A backbone may be any nn.Module with a positive integer `out_features` (the engine reads
    nothing else of it, and sizes the heads by it right after the factory returns).
    """
    if kind == "backbone":
        if not isinstance(built, nn.Module):
            return f"returned {_returned(built)}; a backbone factory returns {_BACKBONE}"
        width = getattr(built, "out_features", None)
        if width is None:
            return f"returned {_returned(built)} with no out_features; a backbone factory returns {_BACKBONE}"
        if not isinstance(width, numbers.Integral) or isinstance(width, bool) or width <= 0:
            return (f"returned {_returned(built)} whose out_features is {kind_of(width)}, not a positive int; a "
                    f"backbone factory returns {_BACKBONE}")
        return None
    if kind not in _RETURNS or isinstance(built, _RETURNS[kind][0]):
        return None
    return f"returned {_returned(built)}; a {kind} factory returns {_RETURNS[kind][1]}"


def _returned(value: Any) -> str:
    """"None", "the class MyNet (not an instance of it)", "a Linear (torch.nn.modules.linear)": what a factory built."""
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {value.__qualname__} (not an instance of it)"
    cls = type(value)
    article = "an" if cls.__name__[:1].lower() in "aeiou" else "a"
    return f"{article} {cls.__qualname__} ({cls.__module__})" if cls.__module__ != "builtins" else kind_of(value)


def _call_hint(kind: str, params: Any) -> Callable[[Exception], str] | None:
    """For a factory that takes something besides its params (a task's name, a weighting's tasks): how hydranet
    calls it, said when it raises as code given its arguments in another order does: an AttributeError or a
    TypeError about the params' type or the other argument's (`def __init__(self, params, tasks)` reads the
    params as the tasks: "object of type 'Power' has no len()", "'tuple' object has no attribute 'power'").
    Other errors of such a factory get no hint: it would send its author after an order that is right."""
    first = {"task": "name", "weighting": "tasks"}.get(kind)
    if first is None or params is None:
        return None
    what = "the task's name (a str)" if kind == "task" else "the list of hydranet.Task objects"
    called = (f"hydranet calls the factory as factory({first}, params): first {what}, then the validated params; "
              f"check the order of its arguments")
    swapped = (f"'{type(params).__name__}'", *(("'str'",) if kind == "task" else ("'list'", "'tuple'")))
    return lambda error: called if (isinstance(error, (AttributeError, TypeError))
                                    and any(name in str(error) for name in swapped)) else ""


def _factory_name(factory: Any) -> str:
    """`hb.tasks.SmileTask`: where a factory is, for an error about it."""
    name = getattr(factory, "__qualname__", None) or type(factory).__qualname__
    module = getattr(factory, "__module__", None)
    return f"{module}.{name}" if module else name


@dataclass
class ResolvedTask:
    name: str
    component: ResolvedComponent

    def build(self) -> Task:
        """Build the task and check what it must say of itself, before any data is read: its `problem`,
        and its `metrics()` (first used for the baseline, where a wrong one would fail naming nothing)."""
        task = self.component.build(self.name, name=self.name)
        who = provenance(task, "task")
        problem = problem_of_task(task)
        if problem:
            raise PluginCall("", who, "", ComponentError).fault(problem)
        PluginCall("the metrics() of", who, METRICS_FIX, ComponentError)(task.metrics, check=metrics_problem)
        return task

    def to_dict(self) -> dict[str, Any]:
        values = self.component.to_dict()
        kind = values.pop("name")
        return {"name": self.name, **({"kind": kind} if kind != self.name else {}), **values}


@dataclass
class ResolvedSpec:
    """A spec whose every name resolved and whose every parameter validated."""

    spec: Spec
    backbone: ResolvedComponent
    tasks: list[ResolvedTask]
    weighting: ResolvedComponent
    data: ResolvedComponent
    source: str | None = None

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def build_tasks(self) -> list[Task]:
        return [t.build() for t in self.tasks]

    def build_weighting(self, tasks: Sequence[Task]) -> Weighting:
        return self.weighting.build(list(tasks))

    def to_dict(self) -> dict[str, Any]:
        """Everything, defaults filled in: loading this dict again gives the same spec."""
        shared = self.spec.data.model_dump(mode="json", exclude={"name"})
        shared = {k: v for k, v in shared.items() if k in DataSection.model_fields}
        return {
            "backbone": self.backbone.to_dict(),
            "image_size": self.spec.image_size,
            "tasks": [t.to_dict() for t in self.tasks],
            "data": {**self.data.to_dict(), **shared},
            "weighting": self.weighting.to_dict(),
            "augment": self.spec.augment.model_dump(mode="json"),
            "train": self.spec.train.model_dump(mode="json"),
            "init_from": self.spec.init_from,
            "freeze": list(self.spec.freeze),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _resolve_component(components: Components, registry, section: str, name: str, params: dict[str, Any],
                       problems: list, name_path: str, params_path: Sequence[Any],
                       section_keys: Sequence[str] = ()) -> ResolvedComponent | None:
    """`section_keys`: the keys the section itself holds beside the params, for did-you-mean on a misspelt one."""
    try:
        entry = registry.get(name)
    except (UnknownNameError, DuplicateNameError) as error:
        problems.append((name_path, str(error)))
        return None
    if entry.params is None and params:  # a misspelt section key still gets its did-you-mean
        about = f" {'dataset' if section == 'data' else section} '{entry.name}' takes no parameters;"
        for key in params:
            problems.append((format_path([*params_path, key]),
                             unknown_field_message(str(key), section_keys, format_path(params_path), about)))
        return None
    try:
        validated = entry.validate_params(params)
    except ValidationError as error:
        problems.extend(pydantic_problems(error, entry.params, params_path, section_keys))
        return None
    except ComponentError as error:
        problems.append(_component_problem(params_path, error))
        return None
    return ResolvedComponent(section, entry, validated, components.pm.describe(entry.plugin))


def _component_problem(path: Sequence[Any], error: ComponentError) -> tuple[str, str]:
    """A component's own complaint, at the field it names under the component's `path`."""
    return format_path([*path, *error.field.split(".")] if error.field else path), str(error)


def _unknown_task(registry, name: str, as_kind: bool) -> str:
    """Why a task name (or `kind`) is unknown: kinds and ready tasks are listed apart, since they are used apart.

    A kind (an entry that needs parameters, such as `binary`'s label) makes a
    new task: `{name: smiling, kind: binary, label: smile}`. A ready task
    (`age`) is named alone; it may also serve as a kind, with its presets.
    """
    kinds = [entry.name for entry in registry if entry.needs_params]
    ready = [entry.name for entry in registry if not entry.needs_params]
    hint = did_you_mean(name, kinds if as_kind else ready) or did_you_mean(name, [*ready, *kinds])
    if as_kind:
        return (f"unknown task kind '{name}';{hint} known kinds: {', '.join(kinds) or '(none registered)'} "
                "(`hydranet list tasks` also lists the ready tasks, which can serve as kinds too)")
    message = f"unknown task '{name}';{hint} known tasks: {', '.join(ready) or '(none registered)'}"
    if kinds and not hint:  # a typo needs the name fixed, not a new task
        message += (f"; for a new task, name a kind and the record field it reads: "
                    f"{{name: {name}, kind: {kinds[0]}, label: <field>}} (kinds: {', '.join(kinds)})")
    return message


def _resolve_task(components: Components, index: int, task: TaskSection,
                  problems: list) -> tuple[ResolvedTask, Task] | None:
    """The resolved task and the task it builds (checked once here; the weighting's check builds on it)."""
    built_from, name_path = task.kind or task.name, f"tasks[{index}].{'kind' if task.kind else 'name'}"
    if built_from not in components.tasks:
        problems.append((name_path, _unknown_task(components.tasks, built_from, bool(task.kind))))
        return None
    inline = dict(task.model_extra or {})
    clash = sorted(set(inline) & set(task.params))
    if clash:
        problems.append((f"tasks[{index}].params.{clash[0]}", "given both inline and under params; keep one"))
        return None
    # Inline keys report errors at tasks[i].key, `params:` keys at tasks[i].params.key.
    prefix: list[Any] = ["tasks", index, "params"] if task.params else ["tasks", index]
    resolved = _resolve_component(components, components.tasks, "task", built_from, {**inline, **task.params},
                                  problems, name_path, prefix, () if task.params else list(TaskSection.model_fields))
    if resolved is None:
        return None
    resolved_task = ResolvedTask(task.name, resolved)
    try:
        return resolved_task, resolved_task.build()
    except ComponentError as error:
        problems.append(_component_problem(prefix, error))
        return None


def _resolve_sections(components: Components, backbone: Component | None, data: Component | None,
                      weighting: Component | None, tasks: Sequence[TaskSection | None], problems: list,
                      freeze: Any = (), monitor: Any = None):
    """Resolve whichever sections are present; append a problem for each that fails.

    `freeze` (raw) is checked against the built weighting: every part frozen and a weighting that learns
    nothing leave a run nothing to train (`_nothing_to_train`). `monitor` (`train.monitor`, raw) is checked
    against the built tasks' metric names, known only now: the first pass checked the task it names.
    """

    def component(registry, section: Component | None, key: str) -> ResolvedComponent | None:
        if section is None:
            return None
        return _resolve_component(components, registry, key, section.name, section.params(), problems,
                                  f"{key}.name", [key], list(type(section).model_fields))

    resolved_backbone = component(components.backbones, backbone, "backbone")
    resolved_data = component(components.datasets, data, "data")
    resolved_weighting = component(components.weightings, weighting, "weighting")
    built = [None if t is None else _resolve_task(components, i, t, problems) for i, t in enumerate(tasks)]
    resolved_tasks = [pair[0] if pair else None for pair in built]
    if isinstance(monitor, str) and tasks and all(built):
        metrics = {resolved.name: list(task.metrics()) for resolved, task in built}
        if monitor.partition(".")[0] in metrics:  # an unknown task is the first pass's problem, said once
            problem = monitor_problem(monitor, metrics)
            if problem:
                problems.append(("train.monitor", problem))
    if resolved_weighting is not None and tasks and all(built):
        try:
            built_weighting = resolved_weighting.build([task for _, task in built])
            check_state_registered(built_weighting)
        except ComponentError as error:
            problems.append(_component_problem(["weighting"], error))
        else:
            problems.extend(_nothing_to_train(freeze, [t.name for t in tasks if t is not None], built_weighting,
                                              resolved_weighting.entry.name))
    return resolved_backbone, resolved_data, resolved_weighting, resolved_tasks


def _nothing_to_train(freeze: Any, tasks: Sequence[str], weighting: Any, weighting_name: str) -> list[tuple[str, str]]:
    """A `freeze` that leaves nothing to train: the backbone and every task frozen, and a weighting with no
    parameters of its own (the weighting is built here, so whether it has any is known before the run)."""
    frozen = set(freeze) if isinstance(freeze, list) and all(isinstance(n, str) for n in freeze) else set()
    if not tasks or not {"backbone", *tasks} <= frozen:
        return []
    parameters = getattr(weighting, "parameters", None)
    if callable(parameters) and any(p.requires_grad for p in parameters()):
        return []  # the weighting's own parameters (uncertainty's log-variances) train: a run may want just that
    return [("freeze", f"freezes every part (backbone, {', '.join(tasks)}) and weighting '{weighting_name}' has "
                       "no parameters of its own, so a run would have nothing to train; remove a part from freeze "
                       "(a head to fine-tune it, or the backbone)")]


def _part_problems(tasks: Sequence[str] | None, freeze: Any, head_lr: Any) -> list[tuple[str, str]]:
    """`freeze` and `train.head_lr` may only name the backbone or tasks of this spec.

    Takes raw values, so that it runs on a spec whose shape has problems
    elsewhere: entries of the wrong type are the shape check's to report.
    `tasks` is None when the task names are not known (`tasks` has a problem
    of its own); then only the names are checked that need no task list.
    """
    problems = []
    for index, name in enumerate(freeze if isinstance(freeze, list) else []):
        if isinstance(name, str) and name != "backbone" and tasks is not None and name not in tasks:
            problems.append((f"freeze[{index}]", f"'{name}' is neither 'backbone' nor a task of this spec;"
                             f"{did_you_mean(name, ['backbone', *tasks])} tasks: {', '.join(tasks)}"))
    for name in head_lr if isinstance(head_lr, Mapping) and tasks is not None else []:
        if name not in tasks:
            problems.append((format_path(["train", "head_lr", name]),
                             f"not a task of this spec;{did_you_mean(str(name), tasks)} tasks: {', '.join(tasks)}"))
    return problems


def resolve(spec: Spec, components: Components, source: str | None = None) -> ResolvedSpec:
    """Second pass: resolve names through the registries and validate component params."""
    problems = _part_problems([t.name for t in spec.tasks], spec.freeze, spec.train.head_lr)
    backbone, data, weighting, tasks = _resolve_sections(components, spec.backbone, spec.data, spec.weighting,
                                                         spec.tasks, problems, spec.freeze, spec.train.monitor)
    if problems:
        raise SpecError(problems + _plugin_hint(problems, components), source)
    assert backbone and data and weighting and all(tasks)
    return ResolvedSpec(spec, backbone, list(tasks), weighting, data, source)


def _plugin_hint(problems: list[tuple[str, str]], components: Components) -> list[tuple[str, str]]:
    """When a name is unknown and a plugin failed to load, say so: that plugin may be what registers it."""
    errors = components.pm.load_errors()
    if not errors or not any(message.startswith("unknown ") for _, message in problems):
        return []
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return [("", f"a plugin failed to load, which may be why a name is unknown: {errors[0]}{more}; "
                 "`hydranet plugins` lists every plugin and its problems")]


def _lenient_problems(raw: Mapping[str, Any], components: Components) -> list[tuple[str, str]]:
    """The second pass's problems wherever their inputs are fine, so that one report lists everything.

    Component params are checked for each section whose name is usable, even
    where one of the keys every dataset shares (`data.val_fraction`) has a
    problem; `freeze` and `train.head_lr` names are checked when every task
    has a name.
    """
    normalized = Spec._names_as_components(raw)

    def section(model: type[BaseModel], value: Any, default: bool) -> Any:
        if value is None:
            return model() if default else None
        try:
            return model.model_validate(value)
        except (ValidationError, TypeError):
            pass
        if model is TaskSection or not isinstance(value, Mapping):
            return None
        try:  # a shared key at fault (reported by the first pass): the component's own params can still be checked
            return model.model_validate({k: v for k, v in value.items() if k == "name" or k not in model.model_fields})
        except (ValidationError, TypeError):
            return None

    raw_tasks = normalized.get("tasks")
    tasks = [section(TaskSection, t, False) for t in raw_tasks] if isinstance(raw_tasks, list) else []
    names = [t.get("name") if isinstance(t, Mapping) else None for t in raw_tasks or []] if tasks else []
    train = normalized.get("train")
    problems = _part_problems(names if names and all(isinstance(n, str) for n in names) else None,
                              normalized.get("freeze"), train.get("head_lr") if isinstance(train, Mapping) else None)
    _resolve_sections(components, section(BackboneSection, normalized.get("backbone"), True),
                      section(DataSection, normalized.get("data"), False),
                      section(WeightingSection, normalized.get("weighting"), True), tasks, problems,
                      normalized.get("freeze"), train.get("monitor") if isinstance(train, Mapping) else None)
    return problems


def _with_dataset_names(problems: list[tuple[str, str]], components: Components) -> list[tuple[str, str]]:
    """A missing `data` or `data.name` lists the datasets to choose from."""
    names = ", ".join(components.datasets.names())
    return [(path, f"{message} Datasets: {names}."
             if path in ("data", "data.name") and message.startswith(("required field missing", EMPTY)) and names
             else message)
            for path, message in problems]


#: what `load_spec` (and `train`'s `spec`) takes, in the words of the error for anything else
SPEC_SOURCES = "a spec file path, a built-in spec name (e.g. 'demo'), a dict, or a ResolvedSpec"


def spec_source(source: object) -> str | os.PathLike[str] | Mapping[str, Any]:
    """`source` as `_load_spec` reads it: a path or name, or a mapping (a ResolvedSpec's own `to_dict`).

    Anything else is refused here, as an `InputError` (a TypeError too) that names `spec`, rather than as
    Python's "expected str, bytes or os.PathLike object, not int" from deep in the path handling.
    """
    if isinstance(source, ResolvedSpec):
        return source.to_dict()
    if isinstance(source, (str, os.PathLike, Mapping)):
        return source
    raise InputError(f"spec must be {SPEC_SOURCES}; got {type(source).__name__} {shown(source)}")


def load_spec(
    source: str | Path | Mapping[str, Any] | ResolvedSpec,
    overrides: str | Iterable[str] = (),
    components: Components | None = None,
    *,
    option: str = CLI_OPTION,
) -> ResolvedSpec:
    """Read, override, shape-check and resolve a spec: a path, a built-in name, a dict, or a ResolvedSpec (whose
    overrides apply to what it resolved from); anything else is an `InputError`.

    Raises `SpecError` listing every problem found, each with its path; a
    problem that an override put there says so, with the override, named as
    the caller's `option` (`--set` on the command line, `overrides` in Python).
    """
    overrides = override_list(overrides, option)
    source = spec_source(source)
    try:
        return _load_spec(source, overrides, components, option)
    except SpecError as error:
        if not overrides:
            raise
        raise SpecError(blame_overrides(error.problems, overrides, option), error.source) from None


def _load_spec(source: str | os.PathLike[str] | Mapping[str, Any], overrides: Sequence[str],
               components: Components | None, option: str) -> ResolvedSpec:
    if isinstance(source, Mapping):
        raw, where = dict(source), None
        deep = [key for key, value in raw.items() if nesting_depth(value) >= MAX_SPEC_DEPTH]
        if deep:
            raise SpecError([(format_path([key]), f"nested more than {MAX_SPEC_DEPTH} levels deep") for key in deep])
    else:
        path = find_spec(source)
        raw, where = read_spec_file(path), str(path)
    components = components or default_components()
    original = raw
    try:
        raw = apply_overrides(raw, overrides, option)
    except SpecError as error:  # a malformed --set: still say which spec it was applied to
        raise SpecError(error.problems, where) from None
    try:
        return _checked(raw, components, where)
    except SpecError as error:
        def supplied(section: str, key: str) -> bool:
            """Whether the overrides themselves give `key` (`--set 'backbone={name: tiny, pretrained: true}'`):
            applied to the spec without it, is it there still?"""
            trimmed = {**original, section: {k: v for k, v in original[section].items() if k != key}}
            try:
                again = apply_overrides(trimmed, overrides, option)
            except SpecError:
                return False
            return isinstance(again.get(section), Mapping) and key in again[section]

        raise SpecError(_left_by_a_new_name(error.problems, original, raw, option, supplied),
                        error.source) from None


def _checked(raw: dict[str, Any], components: Components, where: str | None) -> ResolvedSpec:
    """Shape-check and resolve a spec's raw data (its overrides applied)."""
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as error:
        shape = _with_dataset_names(pydantic_problems(error, Spec), components)
        reported = {path for path, _ in shape}
        more = [p for p in _lenient_problems(raw, components) if p[0] not in reported]
        raise SpecError(shape + more + _plugin_hint(shape + more, components), where) from None
    except RecursionError:
        raise SpecError([("", "the spec is nested too deeply")], where) from None
    return resolve(spec, components, where)


def _component_name(section: Any) -> str | None:
    if isinstance(section, str):
        return section
    return section.get("name") if isinstance(section, Mapping) and isinstance(section.get("name"), str) else None


def _left_by_a_new_name(problems: Sequence[tuple[str, str]], before: Mapping[str, Any], after: Mapping[str, Any],
                        option: str, supplied: Callable[[str, str], bool] = lambda section, key: False
                        ) -> list[tuple[str, str]]:
    """Say where an unknown key came from when an override renamed its component.

    `--set data.name=utkface` on the demo spec, whose dataset is `synthetic`,
    keeps synthetic's `count` and `size`, which utkface does not take; the
    bare "unknown field" would send the user looking for a typo. A key the
    overrides give themselves (`supplied`: a whole section replaced, as that
    message advises) was not kept, and keeps the plain message.
    """
    renamed = {section: (_component_name(before.get(section)), _component_name(after.get(section)))
               for section in COMPONENT_SECTIONS}
    renamed = {section: names for section, names in renamed.items() if all(names) and names[0] != names[1]}
    if not renamed:
        return list(problems)
    result = []
    for path, message in problems:
        section, _, key = path.partition(".")
        kept = before.get(section)
        if (section in renamed and isinstance(kept, Mapping) and key in kept
                and message.startswith("unknown field")  # its did-you-mean would look for a typo
                and not supplied(section, key)):
            old, new = renamed[section]
            replace = (f"--set '{section}={{name: {new}, ...}}'" if option.startswith("-")
                       else f"the override '{section}={{name: {new}, ...}}'")
            message = (f"'{old}' takes this parameter, '{new}' does not: {option} renamed the spec's {section} "
                       f"from '{old}' to '{new}' and kept its other keys; replace the whole section instead, as "
                       f"in {replace}")
        result.append((path, message))
    return result


def blame_overrides(problems: Sequence[tuple[str, str]], overrides: Sequence[str],
                    option: str = CLI_OPTION) -> list[tuple[str, str]]:
    """Mark each problem at or under a `--set` path with that override: `train.epoch (from --set train.epoch=2)`.

    Without it the error says the problem is in the spec file, and the user
    searches the file for a key that is only on the command line. The most
    specific override wins (the later one, between equals: it took effect).
    An unknown key above an override's path is that override's too: `--set
    trian.epochs=2` made the unknown section `trian`.
    """
    targets = []
    for override in overrides:
        try:
            targets.append((format_path(parse_override_path(override.partition("=")[0].strip())), override))
        except ValueError:
            continue  # apply_overrides already reported it

    def under(path: str, target: str) -> bool:
        return path == target or path.startswith((f"{target}.", f"{target}["))

    def blame(path: str, message: str) -> str:
        culprit, depth = None, -1
        for target, override in targets:
            if under(path, target) and len(target) >= depth:
                culprit, depth = override, len(target)
        if culprit is None and message.startswith("unknown field"):
            culprit = next((override for target, override in reversed(targets) if under(target, path)), None)
        return f"{path} (from {origin(option, culprit)})" if culprit else path

    return [(blame(path, message) if path else path, message) for path, message in problems]



# TrainSection and spec_schema are not used here: they are re-exported for the modules that import them
# from here (benchmarks/speed.py; cli.py, docs/generate.py, tests/test_docs.py).
__all__ = ["Spec", "ResolvedSpec", "load_spec", "apply_overrides", "spec_schema", "TrainSection", "HydranetError"]
