"""Name -> component registries with provenance.

A flat, greppable namespace per component kind (as in timm and torchvision's
`list_models`): each entry remembers which plugin registered it, so a clash
between two plugins, or a name nobody registered, produces a message that says
who is involved and what the known names are.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import AliasChoices, AliasPath, BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from hydranet.core.errors import DuplicateNameError, HydranetError, UnknownNameError, closest_name
from hydranet.core.wording import english_list

T = TypeVar("T")

#: lowercase words joined by single '-' or '_', the rule `hydranet new-plugin` applies to NAME
#: (plugins/scaffold.py, which core may not import; a test keeps the two equal)
NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
NAME_RULE = "use lowercase letters and digits, starting with a letter, with single '-' or '_' between words " \
            "(e.g. smile, age_group, resnet18)"


class RegistrationError(HydranetError, ValueError):
    """A plugin called `register(...)` with something hydranet cannot use.

    `problem` says what is wrong and what to do; the message adds the plugin
    (and its distribution, where known) in front of it.
    """

    def __init__(self, problem: str, plugin: str = "<unknown>", distribution: str | None = None,
                 version: str | None = None):
        self.problem, self.plugin, self.distribution, self.version = problem, plugin, distribution, version
        super().__init__(f"{describe_plugin(plugin, distribution, version)}: {problem}")


def describe_plugin(plugin: str, distribution: str | None = None, version: str | None = None,
                    builtin: bool = False) -> str:
    """A plugin as every message names it, with what is known of where it comes from.

    `plugin 'shapes' (hydranet-shapes 0.3)`, `plugin 'shapes' (hydranet-shapes)` when the version is not
    known, `plugin 'hydranet.tasks.utkface' (built-in)`, or just `plugin 'shapes'`. "?" counts as unknown.
    """
    if builtin:
        return f"plugin '{plugin}' (built-in)"
    if not distribution or distribution == "?":
        return f"plugin '{plugin}'"
    return f"plugin '{plugin}' ({distribution}" + (f" {version})" if version and version != "?" else ")")


def _type_name(value: object) -> str:
    return getattr(value, "__qualname__", None) or type(value).__name__


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: how to build it, what it accepts, who provided it."""

    name: str
    factory: Callable[..., T]
    params: type[BaseModel] | None
    plugin: str
    description: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def needs_params(self) -> bool:
        """Whether some parameter has no default, so that naming the entry alone cannot build it.

        Such an entry is a family that a spec instantiates with its own values:
        for tasks, a task kind (`binary` needs a `label`), as opposed to a
        ready task (`gender`, which is `binary` with presets).
        """
        return self.params is not None and any(field.is_required() for field in self.params.model_fields.values())

    def validate_params(self, raw: dict[str, Any]) -> BaseModel | None:
        """Validate raw params against this entry's model (pydantic errors propagate).

        A key the model has no field (or alias) for is refused, as pydantic's `extra_forbidden` (which a spec
        words as "unknown field; did you mean ...?"), whatever the model's own `extra` says, unless it is
        "allow" (the plugin takes any key on purpose): a model left at pydantic's default would drop a
        misspelt key and build the component with the default value. See `strict_params`.
        """
        if self.params is None:
            if raw:
                from hydranet.core.errors import ComponentError

                unexpected = sorted(raw)[0]
                raise ComponentError(f"'{self.name}' takes no parameters", field=unexpected)
            return None
        return strict_params(self.params, raw)


def _alias_keys(alias: Any) -> list[str]:
    """The top-level keys a validation alias reads: a string, or each choice's (an AliasPath's first key)."""
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasPath):
        return [alias.path[0]] if alias.path and isinstance(alias.path[0], str) else []
    if isinstance(alias, AliasChoices):
        return [key for choice in alias.choices for key in _alias_keys(choice)]
    return []


def params_keys(model: type[BaseModel]) -> dict[str, str]:
    """Every key `model` takes, to the key it is validated under (itself, or a field name's alias).

    A field with an alias is read by its alias; by its name too where the model says so (populate_by_name,
    validate_by_name). Its name is taken regardless, as its alias: a resolved spec (a run's spec.yaml, a
    checkpoint's) writes each parameter under its field name, which pydantic would drop otherwise.
    """
    config = model.model_config
    by_alias = config.get("validate_by_alias", True) is not False
    by_name = bool(config.get("validate_by_name") or config.get("populate_by_name")) or not by_alias
    keys: dict[str, str] = {}
    for name, info in model.model_fields.items():
        aliases = _alias_keys(info.validation_alias) + ([info.alias] if isinstance(info.alias, str) else [])
        aliases = list(dict.fromkeys(aliases)) if by_alias else []
        for alias in aliases:
            keys[alias] = alias
        if by_name or not aliases:
            keys.setdefault(name, name)
        elif (read_as := _plain_alias(info.validation_alias or info.alias)) is not None:
            keys.setdefault(name, read_as)
    return keys


def _plain_alias(alias: Any) -> str | None:
    """The key a field's value can be given under as it is: a string alias, or an AliasChoices' first string
    choice (an AliasPath reads inside a key, where a value given by field name does not fit)."""
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return next((choice for choice in alias.choices if isinstance(choice, str)), None)
    return None


def takes_numbers_not_bools(annotation: Any) -> bool:
    """Whether a field of this type holds numbers (int, float, in a union too) and no bool.

    pydantic's lax mode reads `true` as 1 for an int or float field, so
    `epochs: true` would train one epoch: a typo, refused instead.
    """
    if annotation is bool:
        return False
    if annotation in (int, float):
        return True
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(takes_numbers_not_bools(a) for a in arguments) and bool not in arguments
    return False


def _bools_for_numbers(model: type[BaseModel], given: dict[str, Any]) -> list[str]:
    """The keys of `given` holding true/false where `model`'s field takes a number (`takes_numbers_not_bools`)."""
    annotations: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        for key in [name, *_alias_keys(info.validation_alias), *([info.alias] if isinstance(info.alias, str) else [])]:
            annotations.setdefault(key, info.annotation)
    return [key for key, value in given.items()
            if isinstance(value, bool) and takes_numbers_not_bools(annotations.get(key))]


def strict_params(model: type[BaseModel], raw: Any) -> BaseModel:
    """`model.model_validate(raw)`, refusing the keys `model` has no field or alias for (`params_keys`) and
    true/false where a field takes a number (pydantic's lax mode reads them as 1 and 0): one ValidationError
    with them (`extra_forbidden`, `bool_number`) and whatever else pydantic finds in the other keys."""
    if not isinstance(raw, dict):
        return model.model_validate(raw)
    allow_any = model.model_config.get("extra") == "allow"
    keys = params_keys(model)
    unknown = [] if allow_any else [key for key in raw if key not in keys]
    given = raw if allow_any else {key if keys[key] in raw else keys[key]: value
                                   for key, value in raw.items() if key in keys}
    bools = _bools_for_numbers(model, given)
    if not unknown and not bools:
        return model.model_validate(given)
    problems: list[Any] = [{"type": "extra_forbidden", "loc": (key,), "input": raw[key]} for key in unknown]
    problems += [{"type": PydanticCustomError("bool_number", "expected a number, not {value}",
                                              {"value": str(given[key]).lower()}), "loc": (key,), "input": given[key]}
                 for key in bools]
    try:
        model.model_validate(given)
    except ValidationError as error:
        problems += [{"type": PydanticCustomError(e["type"], e["msg"]), "loc": e["loc"], "input": e.get("input")}
                     for e in error.errors() if not (e["loc"] and e["loc"][0] in bools)]  # said once, as a bool
    raise ValidationError.from_exception_data(model.__name__, problems)


@dataclass
class Registry(Generic[T]):
    """Components of one kind ("task", "backbone", ...) keyed by name and alias.

    `call_args` names what hydranet passes to a factory before its params
    (`("name",)` for tasks, `("tasks",)` for weightings): a factory is called
    as `factory(*call_args, params)`, or `factory(*call_args)` when it was
    registered without `params=`.
    """

    kind: str
    call_args: tuple[str, ...] = ()
    _entries: dict[str, Entry[T]] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)
    _conflicts: dict[str, list[str]] = field(default_factory=dict)
    _origins: dict[str, tuple[str | None, str | None, bool]] = field(default_factory=dict)
    #: each conflicted name's entry, per plugin that claims it (for `get(name, prefer_plugin=...)`)
    _claims: dict[str, dict[str, Entry[T]]] = field(default_factory=dict)
    #: methods of this kind known elsewhere but not registered, by `other_methods.normalised` name: an unknown
    #: name among them is told so, not offered another method that happens to be spelt alike
    not_built_in: dict[str, str] = field(default_factory=dict)

    def check(
        self,
        name: str,
        factory: Callable[..., T],
        *,
        params: type[BaseModel] | None = None,
        description: str | None = None,
        aliases: Sequence[str] = (),
        plugin: str = "<unknown>",
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Raise a RegistrationError, naming the plugin and what to do, if `register` would get something unusable."""
        problem = self._problem(name, factory, params, description, aliases)
        if problem:
            raise RegistrationError(problem, plugin, distribution, version)

    def _problem(self, name: Any, factory: Any, params: Any, description: Any, aliases: Any) -> str | None:
        kind = self.kind
        if not isinstance(name, str) or not NAME.fullmatch(name):
            return f"{shown_name(name)} is not a valid {kind} name: {NAME_RULE}"
        about = f"{kind} '{name}'"
        if not callable(factory):
            return (f"the factory of {about} is {_describe(factory)}, not a class or a function: pass the class "
                    f"(or a function) that builds the {kind}")
        if params is not None and not (isinstance(params, type) and issubclass(params, BaseModel)):
            if isinstance(params, BaseModel):
                what = f"an instance of {type(params).__name__}: pass the class itself, params={type(params).__name__}"
            elif dataclasses.is_dataclass(params):
                what = (f"{_type_name(params)}, a dataclass: make it a subclass of pydantic.BaseModel "
                        f"(class {_type_name(params)}(BaseModel): ...), which validates a spec's values")
            else:
                what = f"{_describe(params)}: pass a subclass of pydantic.BaseModel"
            return (f"params of {about} must be a pydantic model class (or left out when it takes no parameters), "
                    f"but it is {what}")
        if description is not None and not isinstance(description, str):
            return f"description of {about} must be a string, not {_describe(description)}"
        if isinstance(aliases, str) or not isinstance(aliases, (list, tuple, set, frozenset)):
            return (f"aliases of {about} must be a list of names, not {_describe(aliases)}"
                    + (f": aliases=[{aliases!r}]" if isinstance(aliases, str) else ""))
        for alias in aliases:
            if not isinstance(alias, str) or not NAME.fullmatch(alias):
                return f"alias {shown_name(alias)} of {about} is not a valid name: {NAME_RULE}"
            if alias == name:
                return f"{about} lists its own name among its aliases; leave it out of aliases"
        return self._call_problem(about, factory, params)

    def _call_problem(self, about: str, factory: Callable[..., Any], params: Any) -> str | None:
        """Whether hydranet's call, `factory(*call_args[, params])`, fits the factory's signature."""
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # a builtin or an extension type without a signature: trust it
            return None
        args = [*self.call_args, *(["params"] if params is not None else [])]

        def fits(arguments: Sequence[str]) -> bool:
            try:
                signature.bind(*arguments)
            except TypeError:
                return False
            return True

        if fits(args):
            return None
        called = f"factory({', '.join(args)})"
        shown_factory = f"{_type_name(factory)}{signature}"
        if params is None and fits([*args, "params"]):
            return (f"{about} was registered without params=, so hydranet calls its factory as {called}, but "
                    f"{shown_factory} needs a params argument: pass params=YourModel (a pydantic model of its "
                    f"parameters) to register(), or give the argument a default")
        if params is not None and fits(self.call_args):
            return (f"{about} was registered with params=, so hydranet calls its factory as {called}, but "
                    f"{shown_factory} takes no params argument: accept one, or leave params= out")
        return f"hydranet calls the factory of {about} as {called}, which {shown_factory} does not accept"

    def register(
        self,
        name: str,
        factory: Callable[..., T],
        *,
        params: type[BaseModel] | None = None,
        description: str | None = None,
        aliases: Sequence[str] = (),
        plugin: str = "<unknown>",
        distribution: str | None = None,
        version: str | None = None,
        builtin: bool = False,
    ) -> None:
        """Add a component. A name already taken by another plugin becomes a conflict.

        Arguments hydranet cannot use (see `check`) raise a RegistrationError
        that names the plugin; a name the same plugin already registered does too.
        The first registration is not silently kept: a conflicted name refuses to
        resolve, naming both plugins, because picking either one would make the
        result depend on plugin load order.
        """
        self.check(name, factory, params=params, description=description, aliases=aliases, plugin=plugin,
                   distribution=distribution, version=version)
        for key in (name, *aliases):
            if self._owner(key) == plugin and plugin != "<unknown>":
                raise RegistrationError(f"registers {self.kind} '{key}' twice; register each name once", plugin,
                                        distribution, version)
        if description is None:
            doc = (getattr(factory, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._origins.setdefault(plugin, (distribution, version, builtin))
        entry = Entry(name, factory, params, plugin, description, tuple(aliases))
        for key in (name, *aliases):
            owner = self._owner(key)
            if owner is not None:
                if key not in self._claims:
                    self._claims[key] = {owner: self.get(key)}
                self._claims[key].setdefault(plugin, entry)
                self._conflicts.setdefault(key, [owner]).append(plugin)
                continue
            if key == name:
                self._entries[name] = entry
            else:
                self._aliases[key] = name

    def snapshot(self) -> tuple[dict, ...]:
        """What `restore` puts back: the registry as it is now (to undo a plugin registered in part)."""
        return (dict(self._entries), dict(self._aliases), {k: list(v) for k, v in self._conflicts.items()},
                dict(self._origins), {k: dict(v) for k, v in self._claims.items()})

    def restore(self, state: tuple[dict, ...]) -> None:
        """Put back what `snapshot` saw, forgetting whatever was registered since."""
        entries, aliases, conflicts, origins, claims = state
        self._entries, self._aliases, self._origins = dict(entries), dict(aliases), dict(origins)
        self._conflicts = {k: list(v) for k, v in conflicts.items()}
        self._claims = {k: dict(v) for k, v in claims.items()}

    def describe(self, plugin: str) -> str:
        """The plugin as messages name it (`describe_plugin`), from what it registered with."""
        return describe_plugin(plugin, *self._origins.get(plugin, (None, None, False)))

    def _owner(self, key: str) -> str | None:
        if key in self._entries:
            return self._entries[key].plugin
        if key in self._aliases:
            return self._entries[self._aliases[key]].plugin
        if key in self._conflicts:
            return self._conflicts[key][0]
        return None

    def get(self, name: str, prefer_plugin: str | None = None) -> Entry[T]:
        """Look a name or alias up; unknown names get a did-you-mean and the known names.

        A name several plugins claim refuses to resolve (a DuplicateNameError
        naming them), unless `prefer_plugin` is one of them: then it is that
        plugin's entry. Only what records who provided a component (a
        checkpoint) may prefer one; a spec never does, since which plugin
        wins would then depend on load order.
        """
        if name in self._conflicts:
            claims = self._claims.get(name, {})
            if prefer_plugin is not None and prefer_plugin in claims:
                return claims[prefer_plugin]
            raise DuplicateNameError(self.conflict_message(name))
        key = self._aliases.get(name, name)
        if key not in self._entries:
            raise UnknownNameError(self.kind, name, self.names(), candidates=[*self.names(), *self._aliases],
                                   instead=self._not_built_in(name))
        return self._entries[key]

    def _not_built_in(self, name: str) -> str | None:
        """" GradVac (LibMTL, torchjd) is not built into hydranet; ...": for a method `not_built_in` names that no
        registered name or alias spells alike (`normalised`: a plugin's `grad_vac` is offered for `gradvac`);
        " did you mean 'ew' (an alias of sum)?" when the closest name is an alias; else None (a did-you-mean)."""
        from hydranet.core.other_methods import normalised

        if not isinstance(name, str):
            return None
        known = [*self.names(), *self._aliases]
        alike = [each for each in known if normalised(each) == normalised(name)]
        method = None if alike else self.not_built_in.get(normalised(name))
        if method is None:
            closest = closest_name(name, alike or known)
            if closest in self._aliases:
                return f" did you mean '{closest}' (an alias of {self._aliases[closest]})?"
            return f" did you mean '{closest}'?" if alike and closest else None
        return (f" {method} is not built into hydranet; a {self.kind} plugin can add it (see "
                f"docs/plugins/{self.kind}.md), or use one of the")

    def names(self) -> list[str]:
        """Registered names (not aliases), sorted."""
        return sorted(self._entries)

    def conflict_message(self, name: str) -> str:
        """Why a conflicted name does not resolve, and what to do (`clash_advice`)."""
        plugins = self._conflicts[name]
        return (f"{self.kind} '{name}' is registered more than once, by "
                f"{english_list(self.describe(p) for p in plugins)}, so no spec can use the name until one of "
                f"them is left out. {self.clash_advice(name)}")

    def clash_advice(self, name: str) -> str:
        """What to do about a name several plugins registered: uninstall a package, or leave a plugin out.

        HYDRANET_PLUGINS lists the entry points to load: it cannot leave out a built-in plugin, so when one
        side is built in, the advice is about the other side only.
        """
        plugins = self._conflicts[name]
        origins = {p: self._origins.get(p, (None, None, False)) for p in plugins}
        others = [p for p in plugins if not origins[p][2]]
        packages = list(dict.fromkeys(origins[p][0] for p in others if origins[p][0] and origins[p][0] != "?"))
        pip = f" (pip uninstall {' or '.join(packages)})" if packages else ""
        if len(others) == len(plugins):
            return (f"Uninstall the package of one of them{pip}, or leave one out with HYDRANET_PLUGINS (the entry "
                    f"points to load, comma-separated).")
        if not others:  # two built-ins: hydranet's own mistake
            return "Both are built in: please report this to hydranet's developers."
        names = english_list(f"'{p}'" for p in others)
        them = "it" if len(others) == 1 else "them"
        return (f"A built-in plugin cannot be left out, so uninstall plugin {names}{pip}, or leave {them} out "
                f"with HYDRANET_PLUGINS (the entry points to load, comma-separated, without {names}); or have "
                f"{them} register the {self.kind} under another name.")

    def claims(self, name: str) -> dict[str, Entry[T]]:
        """Each plugin's entry for a name several plugins registered (by plugin, first registered first); {} for
        any other name."""
        return dict(self._claims.get(name, {}))

    def conflicts(self) -> dict[str, list[str]]:
        """Names claimed by several plugins, with the plugins that claimed them."""
        return {k: list(v) for k, v in self._conflicts.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)


def shown_name(value: object) -> str:
    return repr(value) if isinstance(value, str) else f"{_describe(value)}"


def _describe(value: object) -> str:
    """`None`, `an int (3)`, `DC` for a class: what a plugin passed, in a message."""
    if value is None:
        return "None"
    if isinstance(value, type):
        return _type_name(value)
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    article = "an" if type(value).__name__[:1].lower() in "aeiou" else "a"
    return f"{article} {type(value).__name__} ({text})"
