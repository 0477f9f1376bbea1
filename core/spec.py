"""Spec files: pydantic shape models, YAML/TOML loading, --set overrides, resolution.

Loading runs in two passes. The first checks the file's shape (sections,
types, unknown keys). The second resolves every component name through the
registries and validates each component's own parameters against the model
its plugin registered. Problems from both passes are collected and raised
together as one `SpecError`, each with the path of the field at fault and,
for a misspelling, a did-you-mean.

Spec files are data: YAML is read with `safe_load`, TOML with tomllib; nothing
in a spec can execute code.
"""

from __future__ import annotations

import difflib
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import GenerateJsonSchema

from hydranet.core.errors import ComponentError, DuplicateNameError, HydranetError, SpecError, UnknownNameError, did_you_mean
from hydranet.core.interfaces import Task, Weighting
from hydranet.core.overrides import apply_overrides, parse_override_path
from hydranet.core.plugins import Components, default_components
from hydranet.core.registry import Entry
from hydranet.core.yaml12 import SpecLoader

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class Component(BaseModel):
    """A named component; keys other than `name` are that component's parameters."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Registered name (see `hydranet list`).")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BackboneSection(Component):
    name: str = Field("resnet18", description="Backbone name (see `hydranet list backbones`).")


class WeightingSection(Component):
    name: str = Field("sum", description="Weighting name (see `hydranet list weightings`).")


class DataSection(Component):
    """Dataset name and parameters, plus the keys every dataset shares."""

    name: str = Field(description="Dataset name (see `hydranet list datasets`).")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of samples held out for validation; 0: no "
                                                             "validation split, the metrics and the best checkpoint "
                                                             "are then measured on the training set.")
    split_seed: int = Field(0, description="Seed of the train/validation split (independent of the training seed).")
    strict: bool = Field(False, description="Stop before training, with the list of what is wrong, when images "
                                            "are unreadable or entries or labels malformed, instead of skipping "
                                            "them.")
    cache: bool = Field(True, description="Keep decoded images in the on-disk cache for the next run.")
    workers: int | None = Field(None, ge=0, description="Decoding processes; default: one per CPU core.")
    placement: Literal["auto", "device", "host", "stream"] = Field(
        "auto", description="Where decoded images live: on the device, in pinned host memory, or streamed from "
                            "the cache file by DataLoader workers; auto picks the first that fits.")
    device_memory_gb: float | None = Field(None, gt=0, description="Budget for images on the device; "
                                                                   "default: 40% of the GPU's memory.")


TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class TaskSection(BaseModel):
    """One task: a registered task (`age`) or a new task from a kind (`{name: smiling, kind: binary, ...}`)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="The task's name: its head, loss and metrics are reported under it.",
                      json_schema_extra={"pattern": f"^{TASK_NAME.pattern}$"})
    kind: str | None = Field(None, description="Registered task or kind to build it from; default: `name`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters (may also be given inline).")

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        """Task names become module keys, CSV columns and output names: keep them plain."""
        if not TASK_NAME.fullmatch(name):
            joined = ("; YAML read several lines as this one name: are the list's '- ' items indented alike?"
                      if re.search(r"\s-\s", name) else "")
            raise ValueError(f"task name '{name}' must start with a letter and contain only letters, digits, "
                             f"'_' or '-'{joined}")
        return name


class AugmentSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flip: bool = Field(True, description="Random horizontal flip.")
    translate: float = Field(0.1, ge=0, lt=0.5, description="Random shift, as a fraction of the image size.")
    color_jitter: float = Field(0.0, ge=0, lt=1, description="Random brightness/contrast/saturation strength.")


class TrainSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    backbone_lr: float | None = Field(None, gt=0, description="Learning rate of the backbone; default: lr.")
    head_lr: float | dict[str, float] | None = Field(
        None, description="Learning rate of the heads, or per task ({age: 1e-2}); default: lr.")
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (the article's 0.09 was a typo for 0.9).")
    scheduler: Literal["none", "cosine"] = "cosine"
    seed: int = 0
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), or a torch device string.")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 elsewhere.")
    compile: Literal["auto"] | bool = Field("auto", description="torch.compile the model and losses; auto: on for CUDA.")
    compile_mode: Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "auto", description="torch.compile mode; auto: reduce-overhead (CUDA graphs) on CUDA, default elsewhere.")
    compile_in_background: bool = Field(
        False, description="Start training at once, uncompiled, while a child process compiles the same model "
                           "into the compiler's on-disk cache; switch to the compiled model when it is done (a "
                           "pause of seconds instead of a cold compile before the first step). How many steps run "
                           "uncompiled depends on timing, so runs do not repeat bit for bit. Not with "
                           "deterministic, cuda_graphs step, or several processes.")
    cuda_graphs: Literal["auto", "off", "compiler", "step"] = Field(
        "auto", description="Who records CUDA graphs: compiler (torch.compile's reduce-overhead mode records the "
                            "forward and backward), step (hydranet records the whole step, optimizer included, and "
                            "replays it once per step; for weightings that allow it, in one process), or off; "
                            "auto: as compile_mode says.")
    cudnn_benchmark: bool = Field(
        False, description="Let cuDNN time its convolution algorithms for each shape on the first step and keep "
                            "the fastest (costs start-up time; ignored with deterministic).")
    channels_last: Literal["auto"] | bool = Field("auto", description="channels_last memory format; auto: on for CUDA.")
    log_every: int = Field(50, ge=1, description="Steps between progress-bar loss updates (each one syncs).")
    eval_batch_size: int | None = Field(None, ge=1, description="Validation batch size; default: 2 x batch_size.")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/inf loss stops the run (keeping the last good checkpoint), or skips that "
                            "batch and counts it (costs one host sync per step).")
    deterministic: bool = Field(False, description="Use deterministic algorithms only (slower on GPU); "
                                                   "makes runs and resumed runs repeat bit for bit.")

    @field_validator("cuda_graphs", mode="before")
    @classmethod
    def _off_is_a_word(cls, value: Any) -> Any:
        """YAML reads a bare `off` (in a spec or a --set) as false; here it means the choice "off"."""
        return "off" if value is False else value


COMPONENT_SECTIONS = ("backbone", "weighting", "data")


class Spec(BaseModel):
    """The shape of a spec file (first pass)."""

    model_config = ConfigDict(extra="forbid")

    backbone: BackboneSection = Field(default_factory=BackboneSection, description=(
        "The shared feature extractor: its name, or a mapping of its name and parameters "
        "(`{name: tiny, width: 32}`)."))
    image_size: int = Field(64, ge=8, le=1024, description="Training image size in pixels (square).")
    tasks: list[TaskSection] = Field(min_length=1, description=(
        "The tasks, one head each: a registered task's name (`age`), or a mapping "
        "(`{name: smiling, kind: binary, label: smile}`)."))
    data: DataSection = Field(description=(
        "The dataset: its name, or a mapping of its name, its parameters and the keys every dataset shares "
        "(`{name: utkface, root: data/UTKFace, val_fraction: 0.1}`)."))
    weighting: WeightingSection = Field(default_factory=WeightingSection, description=(
        "How the task losses become one update: its name, or a mapping of its name and parameters "
        "(`{name: dwa, temperature: 2.0}`)."))
    augment: AugmentSection = Field(default_factory=AugmentSection, description="Random changes to training images.")
    train: TrainSection = Field(default_factory=TrainSection, description=(
        "Epochs, batch size, optimizer, learning rates, device, precision and compilation."))
    init_from: str | None = Field(None, description="Start from this checkpoint: its backbone, and the heads of "
                                                    "tasks it shares with this spec; other tasks get new heads.")
    freeze: list[str] = Field(default_factory=list, description="Parts that do not train: 'backbone' and/or "
                                                               "task names (no gradient, fixed batch-norm statistics).")

    @model_validator(mode="before")
    @classmethod
    def _names_as_components(cls, raw: Any) -> Any:
        """Accept `weighting: dwa` for `weighting: {name: dwa}`, and `- age` for `- {name: age}`."""
        if not isinstance(raw, Mapping):
            return raw
        raw = dict(raw)
        for key in COMPONENT_SECTIONS:
            if isinstance(raw.get(key), str):
                raw[key] = {"name": raw[key]}
        if isinstance(raw.get("tasks"), list):
            raw["tasks"] = [{"name": t} if isinstance(t, str) else t for t in raw["tasks"]]
        return raw

    @field_validator("tasks")
    @classmethod
    def _unique_task_names(cls, tasks: list[TaskSection]) -> list[TaskSection]:
        seen: set[str] = set()
        for task in tasks:
            if task.name in seen:
                raise ValueError(f"task '{task.name}' appears more than once; give each task its own name")
            seen.add(task.name)
        return tasks


@dataclass
class ResolvedComponent:
    """A component section after its name and params were checked."""

    section: str
    entry: Entry
    params: BaseModel | None

    def build(self, *args: Any) -> Any:
        """Call the plugin's factory with `args` and the validated params."""
        return self.entry.factory(*args, self.params) if self.params is not None else self.entry.factory(*args)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.entry.name, **(self.params.model_dump(mode="json") if self.params else {})}


@dataclass
class ResolvedTask:
    name: str
    component: ResolvedComponent

    def build(self) -> Task:
        return self.component.build(self.name)

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


# ---------------------------------------------------------------- reading files


#: Guards on what a spec file may expand to. A real spec is a few hundred bytes,
#: a few hundred values and six levels deep; these limits are far above that and
#: far below what would hang the loader or exhaust memory (a YAML alias bomb
#: is a few lines that expand to billions of values).
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_VALUES = 100_000
MAX_SPEC_DEPTH = 50


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or TOML spec into a dict; unreadable, malformed or oversized files raise SpecError."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        hint = f" Built-in specs: {', '.join(builtin_spec_names())}." if builtin_spec_names() else ""
        raise SpecError([("", f"spec file not found: {path}.{hint}")], source)
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError([("", f"{path.name} is {size} bytes, over the {MAX_SPEC_BYTES}-byte limit for a spec "
                              "(a spec is a few hundred bytes); is this the right file?")], source)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError([("", f"not a text file (byte {error.start} is not UTF-8)")], source) from None
    if path.suffix.lower() == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise SpecError([("", f"invalid TOML: {error}")], source) from None
        except RecursionError:
            raise SpecError([("", "invalid TOML: nested too deeply")], source) from None
    else:
        try:
            data = _safe_load_bounded(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error)
            raise SpecError([("", f"invalid YAML{where}: {problem}{_yaml_hint(problem)}")], source) from None
        except _DuplicateKeys as error:
            raise SpecError(error.problems, source) from None
        except RecursionError:
            raise SpecError([("", "invalid YAML: nested too deeply")], source) from None
        except _TooBig as error:
            raise SpecError([("", f"YAML {error}")], source) from None
    if data is None:
        raise SpecError([("", "the spec is empty; it needs at least `tasks` and `data` (see `hydranet spec show demo`)")], source)
    if not isinstance(data, dict):
        raise SpecError([("", f"a spec must be a mapping of sections, not a {type(data).__name__}")], source)
    if _nesting_depth(data) > MAX_SPEC_DEPTH:
        raise SpecError([("", f"the spec is nested more than {MAX_SPEC_DEPTH} levels deep "
                              "(a spec needs about six); is this the right file?")], source)
    return data


class _TooBig(Exception):
    """A YAML document whose aliases would expand past the limits."""


def _yaml_hint(problem: str) -> str:
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


class _DuplicateKeys(Exception):
    """Keys given twice in one YAML mapping: (path, message) each."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__(problems)
        self.problems = problems


def _check_duplicate_keys(root: yaml.Node) -> None:
    """PyYAML keeps the last of two equal keys without a word; a spec with two `data:` sections is a mistake."""
    problems, seen, stack = [], set(), [(root, [])]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, [*path, index]) for index, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge" else None
                if name is not None and name in lines:
                    problems.append((format_path([*path, name]),
                                     f"given twice (lines {lines[name]} and {key.start_mark.line + 1}); YAML would "
                                     "silently keep only the last: keep one"))
                elif name is not None:
                    lines[name] = key.start_mark.line + 1
                stack.append((value, [*path, name if name is not None else "?"]))
    if problems:
        raise _DuplicateKeys(sorted(problems))


def _safe_load_bounded(text: str) -> Any:
    """`yaml.safe_load` (with YAML 1.2's booleans), but the composed node graph is checked before any object is built.

    Aliases are allowed (`&defaults` ... `*defaults` is handy), but one that
    refers to a node containing it, or a document that would expand to more
    than MAX_SPEC_VALUES values, is refused without being expanded.
    """
    loader = SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_graph(node)
        _check_duplicate_keys(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_yaml_graph(root: yaml.Node) -> None:
    """Count the values the document expands to (aliases counted each time), without recursion."""
    expanded: dict[int, int] = {}  # id(node) -> values it expands to, once finished
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _yaml_children(node))
            if expanded[key] > MAX_SPEC_VALUES:
                raise _TooBig(f"aliases expand to more than {MAX_SPEC_VALUES} values (an alias bomb?); "
                              "write the values out, or alias less")
        elif key in on_path:
            raise _TooBig(f"value at line {node.start_mark.line + 1} contains an alias to itself; "
                          "a spec cannot be recursive")
        elif key not in expanded:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _yaml_children(node))


def _nesting_depth(data: Any) -> int:
    """How deeply lists and dicts nest in `data` (acyclic), without recursion; stops early past the limit."""
    deepest, stack = 0, [(data, 1)]
    while stack and deepest <= MAX_SPEC_DEPTH:
        value, level = stack.pop()
        deepest = max(deepest, level)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def builtin_spec_names() -> list[str]:
    return sorted(p.name.rsplit(".", 1)[0] for p in resources.files("hydranet.specs").iterdir()
                  if p.name.endswith((".yaml", ".toml")))


def builtin_spec_path(name: str) -> Path:
    for suffix in (".yaml", ".toml"):
        candidate = resources.files("hydranet.specs") / f"{name}{suffix}"
        if candidate.is_file():
            return Path(str(candidate))
    raise SpecError([("", f"no built-in spec '{name}';{did_you_mean(name, builtin_spec_names())} "
                          f"built-in specs: {', '.join(builtin_spec_names())}")])


def find_spec(name_or_path: str | Path) -> Path:
    """A spec file path, or a built-in spec's name such as `demo`."""
    path = Path(name_or_path)
    if path.exists() or path.suffix.lower() in (".yaml", ".yml", ".toml") or "/" in str(name_or_path):
        return path
    return builtin_spec_path(str(name_or_path))


# ---------------------------------------------------------------- validation


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


def _sections_elsewhere() -> dict[str, list[str]]:
    """Section path -> the keys it holds itself ("" is the top level), for keys written in the wrong section."""
    return {"": list(Spec.model_fields), "train": list(TrainSection.model_fields),
            "augment": list(AugmentSection.model_fields), "data": [k for k in DataSection.model_fields if k != "name"]}


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
    if section in _sections_elsewhere():
        elsewhere = [(closeness(word), f"{other}.{word}" if other else word)
                     for other, words in _sections_elsewhere().items() if other != section for word in words]
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


def _untagged(model: type[BaseModel] | None, loc: Sequence[Any]) -> tuple[list[Any], int | None]:
    """`loc` without pydantic's union-member tags (`head_lr.'dict[str,float]'.age` -> `head_lr.age`).

    Returns the clean path and the length of the path to the first union
    field it went through (None: none), so that one mistake in a union field
    is one problem, not one per member.
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
    return clean, union_at


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


#: pydantic's words for a type, as a spec's author would say them.
_PLAIN_WORDS = {"a valid number": "a number", "a valid integer": "an integer", "a valid dictionary": "a mapping",
                "a valid list": "a list", "a valid string": "a string",
                "a valid boolean": "a boolean (true/false, yes/no, on/off)"}


def _expected(message: str) -> str:
    """'Input should be a valid number, unable to parse ...' -> 'a number'."""
    wanted = message.removeprefix("Input should be ").split(", unable", 1)[0]
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
        result.append({**first, "type": "union", "clean": first["clean"][:depth],
                       "msg": f"should be {' or '.join(words)} (got {_shown(first.get('input'))})"})
    return result


NAMED_SECTIONS = (*COMPONENT_SECTIONS, "tasks")


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
        clean, union_at = _untagged(model, item["loc"])
        items.append({**item, "clean": clean, "union_at": union_at})
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
            owner = _model_at(model, loc[:-1])
            field = owner.model_fields.get(loc[-1]) if owner and loc and isinstance(loc[-1], str) else None
            message = "required field missing" + (f": {field.description}" if field and field.description else "")
        elif item["type"] == "model_type":  # pydantic names its own class: "... or instance of TaskSection"
            what = "a name or a mapping of fields" if at_top and loc[0] in NAMED_SECTIONS else "a mapping of fields"
            given = item.get("input")
            colon = re.fullmatch(r"([A-Za-z_]\w*) \S.*", given) if isinstance(given, str) else None
            message = f"should be {what} (got {_shown(given)})" + (
                f"; is a ':' missing after '{colon[1]}'?" if colon else "")
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")  # our validators' own words need no pydantic label
        elif at_top and loc == ["tasks"] and item["type"] == "list_type":
            message = (f"should be a list of tasks, one name or mapping each (`tasks: [age, gender]`); "
                       f"got {_shown(item.get('input'))}")
        elif at_top and loc == ["tasks"] and item["type"] == "too_short":
            message = "needs at least one task (`tasks: [age]`)"
        elif item["type"] == "union":
            pass
        elif item["type"] in ("dict_type", "list_type"):  # "a valid dictionary" is pydantic's word, not YAML's
            message = f"should be {_expected(message)} (got {_shown(item.get('input'))})"
        elif "input" in item and (not isinstance(item["input"], (dict, list)) or item["type"].endswith("_type")):
            message = f"{message} (got {_shown(item['input'])})"
        problems.append((format_path([*prefix, *loc]), message))
    return problems


def _resolve_component(registry, section: str, name: str, params: dict[str, Any], problems: list,
                       name_path: str, params_path: Sequence[Any],
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
        problems.append((format_path([*params_path, *error.field.split(".")] if error.field else params_path), str(error)))
        return None
    return ResolvedComponent(section, entry, validated)


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


def _resolve_task(components: Components, index: int, task: TaskSection, problems: list) -> ResolvedTask | None:
    if (task.kind or task.name) not in components.tasks:
        field = "kind" if task.kind else "name"
        problems.append((f"tasks[{index}].{field}", _unknown_task(components.tasks, task.kind or task.name,
                                                                  bool(task.kind))))
        return None
    inline = dict(task.model_extra or {})
    clash = sorted(set(inline) & set(task.params))
    if clash:
        problems.append((f"tasks[{index}].params.{clash[0]}", "given both inline and under params; keep one"))
        return None
    # Inline keys report errors at tasks[i].key, `params:` keys at tasks[i].params.key.
    prefix: list[Any] = ["tasks", index, "params"] if task.params else ["tasks", index]
    resolved = _resolve_component(components.tasks, "task", task.kind or task.name, {**inline, **task.params},
                                  problems, f"tasks[{index}].{'kind' if task.kind else 'name'}", prefix,
                                  () if task.params else list(TaskSection.model_fields))
    if resolved is None:
        return None
    resolved_task = ResolvedTask(task.name, resolved)
    try:
        resolved_task.build()
    except ComponentError as error:
        problems.append((format_path([*prefix, *error.field.split(".")] if error.field else prefix), str(error)))
        return None
    return resolved_task


def _resolve_sections(components: Components, backbone: Component | None, data: Component | None,
                      weighting: Component | None, tasks: Sequence[TaskSection | None], problems: list):
    """Resolve whichever sections are present; append a problem for each that fails."""

    def component(registry, section: Component | None, key: str) -> ResolvedComponent | None:
        if section is None:
            return None
        return _resolve_component(registry, key, section.name, section.params(), problems, f"{key}.name", [key],
                                  list(type(section).model_fields))

    resolved_backbone = component(components.backbones, backbone, "backbone")
    resolved_data = component(components.datasets, data, "data")
    resolved_weighting = component(components.weightings, weighting, "weighting")
    resolved_tasks = [None if t is None else _resolve_task(components, i, t, problems) for i, t in enumerate(tasks)]
    if resolved_weighting is not None and tasks and all(resolved_tasks):
        try:
            resolved_weighting.build([t.build() for t in resolved_tasks])
        except ComponentError as error:
            problems.append((format_path(["weighting", *error.field.split(".")] if error.field else ["weighting"]), str(error)))
    return resolved_backbone, resolved_data, resolved_weighting, resolved_tasks


def _part_problems(spec: Spec) -> list[tuple[str, str]]:
    """`freeze` and `train.head_lr` may only name the backbone or tasks of this spec."""
    tasks = [t.name for t in spec.tasks]
    problems = []
    for index, name in enumerate(spec.freeze):
        if name != "backbone" and name not in tasks:
            problems.append((f"freeze[{index}]", f"'{name}' is neither 'backbone' nor a task of this spec;"
                                                 f"{did_you_mean(name, ['backbone', *tasks])} tasks: {', '.join(tasks)}"))
    if isinstance(spec.train.head_lr, dict):
        for name in spec.train.head_lr:
            if name not in tasks:
                problems.append((f"train.head_lr.{name}", f"not a task of this spec;{did_you_mean(name, tasks)} "
                                                         f"tasks: {', '.join(tasks)}"))
    return problems


def resolve(spec: Spec, components: Components, source: str | None = None) -> ResolvedSpec:
    """Second pass: resolve names through the registries and validate component params."""
    problems: list[tuple[str, str]] = _part_problems(spec)
    backbone, data, weighting, tasks = _resolve_sections(components, spec.backbone, spec.data, spec.weighting,
                                                         spec.tasks, problems)
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
    """Component problems of the sections whose shape is fine, so one report lists everything."""
    normalized = Spec._names_as_components(raw)

    def section(model: type[BaseModel], value: Any, default: bool) -> Any:
        if value is None:
            return model() if default else None
        try:
            return model.model_validate(value)
        except (ValidationError, TypeError):
            return None

    raw_tasks = normalized.get("tasks")
    tasks = [section(TaskSection, t, False) for t in raw_tasks] if isinstance(raw_tasks, list) else []
    problems: list[tuple[str, str]] = []
    _resolve_sections(components, section(BackboneSection, normalized.get("backbone"), True),
                      section(DataSection, normalized.get("data"), False),
                      section(WeightingSection, normalized.get("weighting"), True), tasks, problems)
    return problems


def _with_dataset_names(problems: list[tuple[str, str]], components: Components) -> list[tuple[str, str]]:
    """A missing `data` or `data.name` lists the datasets to choose from."""
    names = ", ".join(components.datasets.names())
    return [(path, f"{message} Datasets: {names}."
             if path in ("data", "data.name") and message.startswith("required field missing") and names else message)
            for path, message in problems]


def load_spec(
    source: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    components: Components | None = None,
) -> ResolvedSpec:
    """Read, override, shape-check and resolve a spec: a path, a built-in name, or a dict.

    Raises `SpecError` listing every problem found, each with its path; a
    problem that an override put there says so, with the override.
    """
    overrides = list(overrides)
    try:
        return _load_spec(source, overrides, components)
    except SpecError as error:
        if not overrides:
            raise
        raise SpecError(blame_overrides(error.problems, overrides), error.source) from None


def _load_spec(source: str | Path | Mapping[str, Any], overrides: Sequence[str],
               components: Components | None) -> ResolvedSpec:
    if isinstance(source, Mapping):
        raw, where = dict(source), None
        deep = [key for key, value in raw.items() if _nesting_depth(value) >= MAX_SPEC_DEPTH]
        if deep:
            raise SpecError([(format_path([key]), f"nested more than {MAX_SPEC_DEPTH} levels deep") for key in deep])
    else:
        path = find_spec(source)
        raw, where = read_spec_file(path), str(path)
    components = components or default_components()
    try:
        raw = apply_overrides(raw, overrides)
    except SpecError as error:  # a malformed --set: still say which spec it was applied to
        raise SpecError(error.problems, where) from None
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


def blame_overrides(problems: Sequence[tuple[str, str]], overrides: Sequence[str]) -> list[tuple[str, str]]:
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
        return f"{path} (from --set {culprit})" if culprit else path

    return [(blame(path, message) if path else path, message) for path, message in problems]


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


def spec_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of what the loader accepts: every section's shape, short forms included.

    The short forms are those `Spec._names_as_components` and the field
    validators turn into the full form: a component section or a task given
    as its name alone (`weighting: dwa`, `- age`), `cuda_graphs: false` for
    "off", and booleans as words. Component parameters are whatever the named
    plugin takes, so the schema leaves them open (the loader's second pass
    checks them).
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
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "hydranet spec",
        "description": "A hydranet spec file (YAML or TOML): the backbone, tasks, dataset, weighting and "
                       "training settings of one multi-task model. Unknown keys are errors. Component "
                       "sections (backbone, data, weighting, each task) also take the parameters of the "
                       "component they name: `hydranet list` names the components, the component reference "
                       "their parameters; `hydranet spec validate FILE` checks those too.",
        **{key: value for key, value in schema.items() if key not in ("title", "description")},
    }


__all__ = ["Spec", "ResolvedSpec", "load_spec", "apply_overrides", "spec_schema", "HydranetError"]
