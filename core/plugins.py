"""The plugin manager: built-ins, entry points, the allow-list and load errors.

Built-in components are plugins like any other: modules named in
`BUILTIN_PLUGINS` whose `@hookimpl` functions register them. Third-party
plugins publish an entry point in group `hydranet`. A plugin that fails to
import, implements a misspelled hook, or raises (or calls `register` wrongly)
while registering is recorded with its entry-point name and distribution and
left out as a whole: registration is atomic per plugin, so none of its
components is registered, even those its hooks registered before the error.
The rest keep working. A plugin that registers nothing (hook functions without
the `@hydranet.hookimpl` marker) and entry points in a group spelt like
`hydranet` but not it (`hydranets`) are reported too.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import inspect
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy

from hydranet.core import hookspecs
from hydranet.core.errors import InputError, code_package, did_you_mean, plugin_raised
from hydranet.core.observers import observing_plugins
from hydranet.core.other_methods import WEIGHTINGS_NOT_BUILT_IN
from hydranet.core.registry import RegistrationError, Registry, describe_plugin

ENTRY_POINT_GROUP = "hydranet"
ALLOW_ENV = "HYDRANET_PLUGINS"
#: the distribution recorded for a plugin defined in the caller's own code (a notebook, a script) rather than
#: installed from a package: not a valid distribution name, so no `pip install` is ever suggested for it
INLINE = "<inline>"

BUILTIN_PLUGINS: tuple[str, ...] = (
    "hydranet.tasks.kinds",
    "hydranet.tasks.utkface",
    "hydranet.plugins.backbones",
    "hydranet.plugins.weighting.sum",
    "hydranet.plugins.weighting.static",
    "hydranet.plugins.weighting.uncertainty",
    "hydranet.plugins.weighting.dwa",
    "hydranet.plugins.weighting.rlw",
    "hydranet.plugins.weighting.gls",
    "hydranet.plugins.weighting.famo",
    "hydranet.plugins.weighting.gradnorm",
    "hydranet.plugins.weighting.dbmtl",
    "hydranet.plugins.weighting.pcgrad",
    "hydranet.plugins.weighting.mgda",
    "hydranet.plugins.weighting.cagrad",
    "hydranet.plugins.weighting.imtl",
    "hydranet.plugins.weighting.nashmtl",
    "hydranet.plugins.weighting.aligned",
    "hydranet.plugins.weighting.upgrad",
    "hydranet.plugins.datasets.utkface",
    "hydranet.plugins.datasets.synthetic",
    "hydranet.plugins.datasets.folder",
    "hydranet.plugins.scaffold",
    "hydranet.plugins.synth_command",
)

#: hook name -> attribute of `Components` that holds the registry it fills
REGISTER_HOOKS: dict[str, str] = {
    "register_tasks": "tasks",
    "register_backbones": "backbones",
    "register_weightings": "weightings",
    "register_datasets": "datasets",
}

#: every hook a plugin may implement, in the order `core/hookspecs.py` declares them: each function there that
#: carries the `@hookspec` marker, so a new hook (the run observers') gets the checks and did-you-mean below
HOOKS: tuple[str, ...] = tuple(name for name, value in vars(hookspecs).items()
                               if hasattr(value, f"{hookspecs.PROJECT}_spec"))

LEFT_OUT = "the plugin is left out: none of its components are registered"
#: the key of `PluginInfo.components` that lists a plugin's run observer hooks (`hydranet plugins`: "observes: ...")
OBSERVES = "observes"


def _register_signature(name: str, factory: Callable[..., Any], *, params: Any = None, description: Any = None,
                        aliases: Any = ()) -> None:
    """The `register` callback's documented signature, which a plugin's call is checked against."""


REGISTER = inspect.signature(_register_signature)
REGISTER_CALL = "register(name, factory, *, params=None, description=None, aliases=())"


@dataclass
class PluginInfo:
    """What `hydranet plugins` shows for one plugin.

    `errors` say why it is left out (it registers nothing); `conflicts` name
    the components it shares with another plugin (unusable under that name);
    `warnings` say why it registers nothing, or less than it seems to.
    """

    name: str
    distribution: str
    version: str
    builtin: bool
    components: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def left_out(self) -> bool:
        return bool(self.errors)

    @property
    def origin(self) -> str:
        """Where it comes from, as `hydranet plugins` lists it: `built-in`, or `distribution version`."""
        return "built-in" if self.builtin else f"{self.distribution} {self.version}"

    @property
    def label(self) -> str:
        """`plugin 'name' (distribution version)` (`describe_plugin`), as every recorded problem is prefixed."""
        return describe_plugin(self.name, self.distribution, self.version, self.builtin)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what hydranet needs to report on each plugin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}

    def info_for(self, plugin: str) -> PluginInfo:
        """The plugin's info, made (origin unknown) for a name `add_plugin` did not add."""
        return self.info.setdefault(plugin, PluginInfo(plugin, "?", "?", builtin=False))

    def _record(self, plugin: str, where: str, message: str) -> None:
        info = self.info_for(plugin)
        found = getattr(info, where)
        if message not in found:  # a hook run twice (e.g. commands listed again) reports once
            found.append(message)

    def record_error(self, plugin: str, message: str) -> None:
        """`plugin` is left out, because of `message`."""
        self._record(plugin, "errors", message)

    def record_conflict(self, plugin: str, message: str) -> None:
        """`plugin` registered a name another plugin registered too."""
        self._record(plugin, "conflicts", message)

    def record_warning(self, plugin: str, message: str) -> None:
        """`plugin` loaded but registers nothing, or less than its code suggests."""
        self._record(plugin, "warnings", message)

    def describe(self, plugin: str) -> str:
        """The plugin as messages name it (`describe_plugin`): with its distribution and version where known."""
        info = self.info.get(plugin)
        return info.label if info is not None else describe_plugin(plugin)

    def load_errors(self) -> list[str]:
        """Why plugins are left out or register nothing, each prefixed with the plugin: what may leave a name unknown.

        Name conflicts are not among them (the plugins load; their shared name
        is refused with a message that names both): `problems()` has everything.
        """
        return [f"{i.label}: {e}" for i in self.info.values() for e in (*i.errors, *i.warnings)]

    def problems(self) -> list[str]:
        """Every recorded problem (errors, conflicts, warnings), each prefixed with the plugin it concerns."""
        return [f"{i.label}: {e}" for i in self.info.values() for e in (*i.errors, *i.conflicts, *i.warnings)]

    def add_plugin(self, plugin: object, name: str, *, distribution: str, version: str, builtin: bool) -> bool:
        """Register one plugin; on a bad hook, record why and leave it out.

        A name already taken raises an `InputError` saying so: recording it would overwrite (or mark as left
        out) the plugin that holds the name, and pluggy's own refusal prints its whole table of plugins.
        """
        if name in self.info or self.has_plugin(name):
            raise InputError(f"plugin name '{name}' is already registered (by {self.describe(name)}); give this "
                             "plugin another name")
        self.info[name] = PluginInfo(name, distribution, version, builtin)
        problems = _hook_problems(self, plugin)
        if problems:
            for problem in problems:
                self.record_error(name, f"{problem}; {LEFT_OUT}")
            return False
        try:
            self.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as error:
            self.record_error(name, f"could not be registered: {' '.join(str(error).split())}")
            return False
        try:
            self.check_pending()
        except pluggy.PluginValidationError as error:
            self.unregister(name=name)
            self.record_error(name, f"implements an unknown hook ({error}); the hooks are {', '.join(HOOKS)}")
            return False
        for warning in _unmarked_hooks(self, plugin):
            self.record_warning(name, warning)
        return True


def _routines(plugin: object) -> list[tuple[str, Any]]:
    """The plugin's public functions (or methods), by name."""
    found = []
    for attr in dir(plugin):
        if attr.startswith("_"):
            continue
        try:
            value = getattr(plugin, attr)
        except Exception:  # a property of a plugin object may raise anything
            continue
        if inspect.isroutine(value):
            found.append((attr, value))
    return found


def _marked(pm: PluginManager, plugin: object, attr: str) -> bool:
    return _hook_name(pm, plugin, attr) is not None


def _hook_name(pm: PluginManager, plugin: object, attr: str) -> str | None:
    """The hook a marked function implements: its name, or the one `@hookimpl(specname=...)` gives; None if unmarked."""
    try:
        options = pm.parse_hookimpl_opts(plugin, attr)
    except Exception:  # an odd attribute of a plugin object: not a hook
        return None
    return None if options is None else (options.get("specname") or attr)


def _hook_problems(pm: PluginManager, plugin: object) -> list[str]:
    """Marked functions that pluggy would refuse, said with a did-you-mean or the arguments hydranet passes."""
    problems = []
    for attr, function in _routines(plugin):
        hook = _hook_name(pm, plugin, attr)
        if hook is None:
            continue
        if hook not in HOOKS:
            problems.append(f"implements an unknown hook '{hook}';{did_you_mean(hook, HOOKS)} "
                            f"the hooks are {', '.join(HOOKS)}")
            continue
        expected = list(inspect.signature(getattr(hookspecs, hook)).parameters)
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            continue
        unknown = [n for n, p in parameters.items() if n not in expected and p.default is p.empty
                   and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if unknown:
            problems.append(f"its hook {attr}({', '.join(parameters)}) takes "
                            f"{', '.join(repr(n) for n in unknown)}, which hydranet does not pass: the hook's "
                            f"arguments are named {', '.join(repr(n) for n in expected)}; write "
                            f"def {attr}({', '.join(expected)})")
    return problems


def _unmarked_hooks(pm: PluginManager, plugin: object) -> list[str]:
    """Warnings for functions named like hooks without the `@hydranet.hookimpl` marker, which pluggy ignores.

    A function named exactly like a hook is always reported; one named close
    to a hook (`register_task`) only when the plugin has no marked hook at
    all, since a working plugin may well have a helper of a similar name.
    """
    routines = _routines(plugin)
    marked = any(_marked(pm, plugin, attr) for attr, _ in routines)
    found = []
    for attr, _ in routines:
        if _marked(pm, plugin, attr):
            continue
        if attr in HOOKS:
            found.append(f"{attr} is named like a hook but has no @hydranet.hookimpl marker, so hydranet never "
                         f"calls it: put @hydranet.hookimpl on the line above def {attr}")
        elif not marked:
            close = difflib.get_close_matches(attr, HOOKS, n=1, cutoff=0.8)
            if close:
                found.append(f"{attr} looks like the hook {close[0]} but is neither marked nor named like it, so "
                             f"hydranet never calls it: rename it to {close[0]} and put @hydranet.hookimpl above it")
    if marked:
        return found
    return ["registers nothing: " + ("; ".join(found) if found else
                                     f"it has no @hydranet.hookimpl functions (the hooks: {', '.join(HOOKS)})")]


def allowed_plugins(env: dict[str, str] | None = None) -> set[str] | None:
    """The HYDRANET_PLUGINS allow-list: None when unset (all), empty set = built-ins only."""
    raw = (os.environ if env is None else env).get(ALLOW_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def hydranet_version() -> str:
    from hydranet import __version__

    return __version__


def make_plugin_manager(
    *,
    builtins: Iterable[str] = BUILTIN_PLUGINS,
    entry_points: bool = True,
    allow: set[str] | None | str = "env",
) -> PluginManager:
    """A fresh manager with built-ins and (allowed) entry-point plugins loaded.

    `allow="env"` reads HYDRANET_PLUGINS; pass a set (or None for all) to override.
    Tests build their own manager and `add_plugin` inline plugins to it.
    """
    pm = PluginManager()
    version = hydranet_version()
    for module_name in builtins:
        module = importlib.import_module(module_name)
        pm.add_plugin(module, module_name, distribution="hydranet", version=version, builtin=True)
    if entry_points:
        load_entry_points(pm, allowed_plugins() if allow == "env" else allow)
    return pm


def load_entry_points(pm: PluginManager, allow: set[str] | None) -> None:
    """Import each allowed entry point of group `hydranet`; record failures by name and distribution.

    A name in the allow-list that no installed plugin has is recorded too: a
    typo in HYDRANET_PLUGINS would otherwise just leave a plugin out. So is an
    entry point in a group spelt like `hydranet` but not it (`hydranets`,
    `hydra_net`, `hydranet.plugins`), which hydranet would never see.
    """
    everything = metadata.entry_points()
    installed = list(everything.select(group=ENTRY_POINT_GROUP))
    misgrouped = [ep for group in sorted(everything.groups) if _near_group(group)
                  for ep in everything.select(group=group)]
    for ep in misgrouped:
        if (allow is None or ep.name in allow) and ep.name not in {e.name for e in installed}:
            _record_misgrouped(pm, ep)
    for name in sorted((allow or set()) - {ep.name for ep in [*installed, *misgrouped]}):
        pm.record_error(name, f"{ALLOW_ENV} names '{name}', but no installed plugin has that entry point;"
                        + (did_you_mean(name, [ep.name for ep in installed]) or "")
                        + f" installed: {', '.join(sorted(ep.name for ep in installed)) or 'none'}")
    for ep in installed:
        if allow is not None and ep.name not in allow:
            continue
        dist_name, dist_version = _distribution(ep)
        if ep.name in pm.info:
            pm.record_error(ep.name, f"entry point '{ep.name}' of {dist_name} is a duplicate plugin name; skipped")
            continue
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as error:  # a plugin's import may raise anything, even sys.exit()
            pm.info[ep.name] = PluginInfo(ep.name, dist_name, dist_version, builtin=False)
            words = plugin_raised(error, ep.value.split(":")[0].split(".")[0], keep=True)
            pm.record_error(ep.name, f"failed to import '{ep.value}': {words}")
            continue
        pm.add_plugin(plugin, ep.name, distribution=dist_name, version=dist_version, builtin=False)


def _distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    """(name, version) of the distribution that installed `ep`, "?" where unknown."""
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else ("?", "?")


def _near_group(group: str) -> bool:
    """Whether an entry-point group looks meant to be `hydranet` (`hydranets`, `hydra_net`, `hydranet.plugins`)."""
    if group == ENTRY_POINT_GROUP:
        return False
    squashed = re.sub(r"[^a-z0-9]", "", group.lower())
    return (squashed.startswith(ENTRY_POINT_GROUP)
            or difflib.SequenceMatcher(None, squashed, ENTRY_POINT_GROUP).ratio() >= 0.8)


def _record_misgrouped(pm: PluginManager, ep: metadata.EntryPoint) -> None:
    dist_name, dist_version = _distribution(ep)
    table = ep.group if re.fullmatch(r"[A-Za-z0-9_-]+", ep.group) else f'"{ep.group}"'
    package = f"package {dist_name}" if dist_name != "?" else "an installed package"
    pm.info.setdefault(ep.name, PluginInfo(ep.name, dist_name, dist_version, builtin=False))
    pm.record_error(ep.name, f"entry points in group '{ep.group}' of {package} are not loaded: the group is "
                    f"'{ENTRY_POINT_GROUP}'. In its pyproject.toml, rename [project.entry-points.{table}] to "
                    f"[project.entry-points.{ENTRY_POINT_GROUP}] and reinstall it (pip install -e .)")


@dataclass
class Components:
    """The registries filled by every loaded plugin, plus the manager that filled them."""

    pm: PluginManager
    tasks: Registry = field(default_factory=lambda: Registry("task", ("name",)))
    backbones: Registry = field(default_factory=lambda: Registry("backbone"))
    weightings: Registry = field(default_factory=lambda: Registry("weighting", ("tasks",),
                                                                   not_built_in=dict(WEIGHTINGS_NOT_BUILT_IN)))
    datasets: Registry = field(default_factory=lambda: Registry("dataset"))
    #: whether `record_commands` ran: the command line's `default_components()` records them, and `hydranet
    #: plugins` asks for them as well (it may run apart from the command line's group, as in a test)
    _commands_recorded: bool = field(default=False, init=False, repr=False)

    def registry(self, kind: str) -> Registry:
        """Registry by plural kind name ("tasks", "backbones", ...)."""
        if kind not in REGISTER_HOOKS.values():
            raise KeyError(kind)
        return getattr(self, kind)

    def add_commands(self, cli: Any) -> None:
        """Let each plugin add click commands; a failing plugin is recorded, not fatal.

        A plugin left out of the components adds no commands, and one whose
        register_commands raises keeps none of the commands it added before.
        """
        for name, impl in _impls(self.pm, "register_commands"):
            info = self.pm.info_for(name)
            if info.left_out:
                continue
            commands = getattr(cli, "commands", {})
            before = set(commands)
            added = lambda: sorted(set(getattr(cli, "commands", {})) - before)  # noqa: E731
            if not _call_isolated(self.pm, name, "register_commands", impl, {"cli": cli},
                                  "its commands are left out"):
                for command in added():
                    commands.pop(command, None)
                continue
            if added():  # shown by `hydranet plugins` next to the plugin's other components
                listed = info.components.setdefault("commands", [])
                listed += [command for command in added() if command not in listed]

    def record_commands(self) -> None:
        """Record which commands each plugin adds, and which plugin's register_commands raises, as `hydranet
        plugins` lists them: `add_commands` into a scratch group, since the command line's may hold them already.

        Once: a second call (`hydranet plugins` after the command line's `default_components()`) would run
        every plugin's register_commands again, for nothing but its side effects.
        """
        import click

        if self._commands_recorded:
            return
        self._commands_recorded = True
        self.add_commands(click.Group())


def _impls(pm: PluginManager, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
    """(plugin name, hook function) in plugin registration order."""
    order = {name: i for i, (name, _) in enumerate(pm.list_name_plugin())}
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    return [(impl.plugin_name, impl.function) for impl in sorted(impls, key=lambda i: order[i.plugin_name])]


def _call_isolated(pm: PluginManager, plugin: str, hook: str, function: Callable[..., Any], kwargs: dict[str, Any],
                   consequence: str = LEFT_OUT) -> bool:
    """Call one plugin's hook; record what it raised, and what follows from that, against the plugin."""
    accepted = inspect.signature(function).parameters
    try:
        function(**{k: v for k, v in kwargs.items() if k in accepted})
    except RegistrationError as error:  # register() refused what the plugin passed; the message says why
        pm.record_error(plugin, f"{hook}: {error.problem}; {consequence}")
        return False
    except (Exception, SystemExit) as error:  # a plugin's hook may raise anything, even sys.exit()
        pm.record_error(plugin, f"{hook} raised {plugin_raised(error, code_package(function), keep=True)}; "
                                f"{consequence}")
        return False
    return True


def _register_callback(registry: Registry, info: PluginInfo, calls: list[dict[str, Any]]) -> Callable[..., None]:
    """The `register` a plugin's hook receives: it checks each call and keeps it in `calls`, registering nothing.

    `load_components` registers a plugin's calls once all its hooks have
    returned without an error, so that a plugin is registered whole or not at all.
    """

    def register(*args: Any, **kwargs: Any) -> None:
        call = _bind_register(args, kwargs, info)
        registry.check(**call, plugin=info.name, distribution=info.distribution, version=info.version)
        names = {call["name"], *call["aliases"]}
        for earlier in calls:
            again = sorted(names & {earlier["name"], *earlier["aliases"]})
            if again:
                raise RegistrationError(f"registers {registry.kind} '{again[0]}' twice; register each name once",
                                        info.name, info.distribution, info.version)
        calls.append(call)

    return register


def _bind_register(args: tuple[Any, ...], kwargs: dict[str, Any], info: PluginInfo) -> dict[str, Any]:
    """A plugin's `register(...)` arguments by name, or a RegistrationError saying how to call it."""
    keywords = [n for n, p in REGISTER.parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = [k for k in kwargs if k not in REGISTER.parameters]
    if unknown:
        problem = (f"register() got an unexpected keyword argument '{unknown[0]}';"
                   f"{did_you_mean(unknown[0], keywords)} it is called as {REGISTER_CALL}")
    elif len(args) > 2:
        problem = (f"register() takes two arguments by position, the name and the factory, but got {len(args)}: "
                   f"give the others by keyword ({', '.join(k + '=' for k in keywords)}), as in {REGISTER_CALL}")
    else:
        try:
            bound = REGISTER.bind(*args, **kwargs)
        except TypeError as error:
            problem = f"register(): {error}; it is called as {REGISTER_CALL}"
        else:
            bound.apply_defaults()
            return dict(bound.arguments)
    raise RegistrationError(problem, info.name, info.distribution, info.version)


def _register_calls(components: Components, pm: PluginManager, plugin_name: str,
                    calls: dict[tuple[str, str], list[dict[str, Any]]]) -> bool:
    """Register what one plugin's hooks asked for, whole or not at all: a RegistrationError (which `register`'s
    checks raise in the hook, as a rule) leaves the plugin out with the error recorded, and gives False."""
    info = pm.info[plugin_name]
    registries = {kind: getattr(components, kind) for kind in REGISTER_HOOKS.values()}
    saved = {kind: registry.snapshot() for kind, registry in registries.items()}
    try:
        for kind, registry in registries.items():
            for call in calls.get((plugin_name, kind), []):
                registry.register(**call, plugin=plugin_name, distribution=info.distribution, version=info.version,
                                  builtin=info.builtin)
    except RegistrationError as error:
        for kind, registry in registries.items():
            registry.restore(saved[kind])
        pm.record_error(plugin_name, f"{error.problem}; {LEFT_OUT}")
        return False
    for kind in registries:
        for call in calls.get((plugin_name, kind), []):
            info.components.setdefault(kind, []).append(call["name"])
    return True


def load_components(pm: PluginManager | None = None) -> Components:
    """Run every plugin's register_* hooks into fresh registries, remembering who registered what.

    Registration is atomic per plugin: if any of a plugin's hooks raises (or
    calls `register` wrongly), none of its components is registered, from that
    hook or its others, and the plugin is reported as left out.
    """
    pm = pm or make_plugin_manager()
    components = Components(pm)
    calls: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failed: set[str] = set()
    for hook_name, kind in REGISTER_HOOKS.items():
        for plugin_name, function in _impls(pm, hook_name):
            info = pm.info_for(plugin_name)
            register = _register_callback(getattr(components, kind), info, calls.setdefault((plugin_name, kind), []))
            if not _call_isolated(pm, plugin_name, hook_name, function, {"register": register}):
                failed.add(plugin_name)
    for info in pm.info.values():  # what this call registers, not an earlier one on the same manager
        for kind in (*REGISTER_HOOKS.values(), OBSERVES):
            info.components.pop(kind, None)
    registered = {plugin_name for plugin_name, _ in calls}  # a plugin with two impls of one hook is in it once
    for plugin_name, _ in pm.list_name_plugin():
        if plugin_name in registered and plugin_name not in failed and not _register_calls(components, pm,
                                                                                            plugin_name, calls):
            failed.add(plugin_name)
    for kind in REGISTER_HOOKS.values():
        registry: Registry = getattr(components, kind)
        for name, plugins in registry.conflicts().items():
            for plugin_name in plugins[1:]:
                pm.record_conflict(plugin_name, f"{registry.kind} '{name}' is also registered by "
                                   f"{registry.describe(plugins[0])}, so a spec cannot use it. "
                                   f"{registry.clash_advice(name)}")
    for plugin_name, hooks in observing_plugins(pm).items():  # listed by `hydranet plugins`, as components are
        if plugin_name not in failed:
            pm.info_for(plugin_name).components[OBSERVES] = hooks
    return components


#: whether `default_components()` record each plugin's commands (`Components.record_commands`): set once the
#: command line lists its plugin commands, which it does from lighter components (core/plugin_commands.py)
_records_commands = False


@cache
def default_components() -> Components:
    """The components of this process's installed plugins, built on first use."""
    components = load_components(make_plugin_manager())
    if _records_commands:
        components.record_commands()
    return components


def record_commands_in_default_components() -> None:
    """Have `default_components()` record each plugin's commands: at once if they are built, else when they are."""
    global _records_commands
    _records_commands = True
    cache_info = getattr(default_components, "cache_info", None)  # absent where a test put its own in
    if cache_info is None or cache_info().currsize:
        default_components().record_commands()


def inline_plugin_name(plugin: object) -> str:
    """The name `components` registers an inline plugin under: a module's name, else its class's (or its own)."""
    if inspect.ismodule(plugin) or inspect.isclass(plugin):
        return plugin.__name__
    return type(plugin).__name__


def defined_inline(plugin: object) -> bool:
    """Whether a plugin object comes from the running script or notebook (`__main__`), not from a package."""
    if inspect.ismodule(plugin):
        return plugin.__name__ == "__main__"
    return getattr(plugin if inspect.isclass(plugin) else type(plugin), "__module__", None) == "__main__"


def components(*plugins: object) -> Components:
    """The built-in and installed plugins' components plus those of `plugins`, defined in your own code.

    For a notebook or a script: each plugin is an object (a module, a class or
    an instance) with `@hydranet.hookimpl` functions, registered under its
    module's or class's name, as an installed plugin would be, so that
    `hydranet.train(spec, components=hydranet.components(MyPlugin()))` can use
    what it registers. A checkpoint records such a plugin as inline, and
    loading it elsewhere says to pass `components=` with the plugin again
    (`hydranet.load(path, components=...)`) instead of naming a package to
    install. HYDRANET_PLUGINS limits the installed plugins as usual; a plugin
    given here is always included. A plugin whose hooks fail is left out and
    reported as an installed one is (`hydranet.components().pm.problems()`);
    two plugins under one name are refused.
    """
    pm = make_plugin_manager()
    names = [inline_plugin_name(plugin) for plugin in plugins]
    for index, (plugin, name) in enumerate(zip(plugins, names)):
        if plugin is None or isinstance(plugin, (str, bytes, int, float, bool, list, tuple, dict)):
            raise InputError(f"plugins are objects with @hydranet.hookimpl functions (a module, a class or an "
                             f"instance); plugin {index + 1} is a {type(plugin).__name__} {plugin!r:.60}")
        pm.add_plugin(plugin, name, distribution=INLINE, version="?", builtin=False)
    made = load_components(pm)
    # a plugin the caller passed is meant to work: its problems are raised here, not left for a spec to
    # find as an unknown name (an installed plugin's are only reported, so that the others keep working)
    problems = [f"{pm.info[name].label}: {error}" for name in names
                for error in pm.info[name].errors]
    if problems:
        raise InputError("\n".join(problems))
    return made
