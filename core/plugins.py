"""The plugin manager: built-ins, entry points, the allow-list and load errors.

Built-in components are plugins like any other: modules named in
`BUILTIN_PLUGINS` whose `@hookimpl` functions register them. Third-party
plugins publish an entry point in group `hydranet`. A plugin that fails to
import, implements a misspelled hook, or raises while registering is recorded
with its entry-point name and distribution and left out; the rest keep working.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy

from hydranet.core import hookspecs
from hydranet.core.errors import did_you_mean
from hydranet.core.registry import Registry

ENTRY_POINT_GROUP = "hydranet"
ALLOW_ENV = "HYDRANET_PLUGINS"

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
)

#: hook name -> attribute of `Components` that holds the registry it fills
REGISTER_HOOKS: dict[str, str] = {
    "register_tasks": "tasks",
    "register_backbones": "backbones",
    "register_weightings": "weightings",
    "register_datasets": "datasets",
}


@dataclass
class PluginInfo:
    """What `hydranet plugins` shows for one plugin."""

    name: str
    distribution: str
    version: str
    builtin: bool
    components: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what hydranet needs to report on each plugin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}

    def record_error(self, plugin: str, message: str) -> None:
        info = self.info.setdefault(plugin, PluginInfo(plugin, "?", "?", builtin=False))
        if message not in info.errors:  # a hook run twice (e.g. commands listed again) reports once
            info.errors.append(message)

    def load_errors(self) -> list[str]:
        """Every recorded problem, each prefixed with the plugin it concerns."""
        return [f"{i.name} ({i.distribution} {i.version}): {e}" for i in self.info.values() for e in i.errors]

    def add_plugin(self, plugin: object, name: str, *, distribution: str, version: str, builtin: bool) -> bool:
        """Register one plugin; on a bad hook, record why and leave it out."""
        self.info[name] = PluginInfo(name, distribution, version, builtin)
        try:
            self.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as error:
            self.record_error(name, f"could not be registered: {error}")
            return False
        try:
            self.check_pending()
        except pluggy.PluginValidationError as error:
            self.unregister(name=name)
            self.record_error(name, f"implements an unknown hook ({error}); the known hooks are "
                              + ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_"))))
            return False
        return True


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
    typo in HYDRANET_PLUGINS would otherwise just leave a plugin out.
    """
    installed = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    for name in sorted((allow or set()) - {ep.name for ep in installed}):
        pm.record_error(name, f"{ALLOW_ENV} names '{name}', but no installed plugin has that entry point;"
                        + (did_you_mean(name, [ep.name for ep in installed]) or "")
                        + f" installed: {', '.join(sorted(ep.name for ep in installed)) or 'none'}")
    for ep in installed:
        if allow is not None and ep.name not in allow:
            continue
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        dist_version = dist.version if dist is not None else "?"
        if ep.name in pm.info:
            pm.record_error(ep.name, f"entry point '{ep.name}' of {dist_name} is a duplicate plugin name; skipped")
            continue
        try:
            plugin = ep.load()
        except Exception as error:  # a plugin's import may raise anything
            pm.info[ep.name] = PluginInfo(ep.name, dist_name, dist_version, builtin=False)
            pm.record_error(ep.name, f"failed to import '{ep.value}': {type(error).__name__}: {error}")
            continue
        pm.add_plugin(plugin, ep.name, distribution=dist_name, version=dist_version, builtin=False)


@dataclass
class Components:
    """The registries filled by every loaded plugin, plus the manager that filled them."""

    pm: PluginManager
    tasks: Registry = field(default_factory=lambda: Registry("task"))
    backbones: Registry = field(default_factory=lambda: Registry("backbone"))
    weightings: Registry = field(default_factory=lambda: Registry("weighting"))
    datasets: Registry = field(default_factory=lambda: Registry("dataset"))

    def registry(self, kind: str) -> Registry:
        """Registry by plural kind name ("tasks", "backbones", ...)."""
        if kind not in REGISTER_HOOKS.values():
            raise KeyError(kind)
        return getattr(self, kind)

    def add_commands(self, cli: Any) -> None:
        """Let each plugin add click commands; a failing plugin is recorded, not fatal."""
        for name, impl in _impls(self.pm, "register_commands"):
            before = set(getattr(cli, "commands", {}))
            _call_isolated(self.pm, name, "register_commands", impl, {"cli": cli})
            added = sorted(set(getattr(cli, "commands", {})) - before)
            if added:  # shown by `hydranet plugins` next to the plugin's other components
                info = self.pm.info.setdefault(name, PluginInfo(name, "?", "?", builtin=False))
                listed = info.components.setdefault("commands", [])
                listed += [command for command in added if command not in listed]


def _impls(pm: PluginManager, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
    """(plugin name, hook function) in plugin registration order."""
    order = {name: i for i, (name, _) in enumerate(pm.list_name_plugin())}
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    return [(impl.plugin_name, impl.function) for impl in sorted(impls, key=lambda i: order[i.plugin_name])]


def _call_isolated(pm: PluginManager, plugin: str, hook: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    accepted = inspect.signature(function).parameters
    try:
        function(**{k: v for k, v in kwargs.items() if k in accepted})
    except Exception as error:  # a plugin's hook may raise anything
        pm.record_error(plugin, f"{hook} raised {type(error).__name__}: {error}")


def load_components(pm: PluginManager | None = None) -> Components:
    """Run every plugin's register_* hooks into fresh registries, remembering who registered what."""
    pm = pm or make_plugin_manager()
    components = Components(pm)
    for hook_name, kind in REGISTER_HOOKS.items():
        registry: Registry = getattr(components, kind)
        for plugin_name, function in _impls(pm, hook_name):
            info = pm.info.setdefault(plugin_name, PluginInfo(plugin_name, "?", "?", builtin=False))

            def register(name: str, factory: Callable[..., Any], *, _plugin: str = plugin_name,
                         _info: PluginInfo = info, _kind: str = kind, _registry: Registry = registry,
                         **options: Any) -> None:
                _registry.register(name, factory, plugin=_plugin, **options)
                _info.components.setdefault(_kind, []).append(name)

            _call_isolated(pm, plugin_name, hook_name, function, {"register": register})
        for name, plugins in registry.conflicts().items():
            for plugin_name in plugins[1:]:
                pm.record_error(plugin_name, f"{registry.kind} '{name}' is also registered by '{plugins[0]}'")
    return components


@cache
def default_components() -> Components:
    """The components of this process's installed plugins, built on first use."""
    return load_components(make_plugin_manager())
