"""`hydranet list` and `hydranet plugins`: what the plugins registered, and what went wrong loading them.

A module of its own so that core/cli.py stays the command group. Like every command module it imports
the plugins (and with them torch) only inside a command, never at import time: `hydranet --help` stays fast.
"""

from __future__ import annotations

from typing import Any

import click

from hydranet.core.option_types import KindChoice
from hydranet.core.report import format_table, indent
from hydranet.core.wording import plural

KINDS = ("tasks", "backbones", "weightings", "datasets")
#: what `hydranet list` shows: the component kinds, then the plugins that observe runs (they register no component)
LISTED = (*KINDS, "observers")


def component_kind_hint(name: str) -> str | None:
    """What `hydranet list NAME` (a name where a kind goes) meant: "dwa is a weighting: hydranet list weightings
    dwa", or None when no component has that name."""
    try:
        from hydranet.core.plugins import default_components

        components = default_components()
        kinds = [kind for kind in KINDS if name in components.registry(kind).names()]
    except Exception:  # only a hint
        return None
    return " or ".join(f"{name} is a {kind[:-1]}: hydranet list {kind} {name}" for kind in kinds) or None


@click.command("list", short_help="List registered components, or one with its parameters.")
@click.argument("kind", required=False, type=KindChoice(LISTED, hint=component_kind_hint))
@click.argument("name", required=False)
def list_components(kind: str | None, name: str | None) -> None:
    """List registered components (tasks, backbones, weightings, datasets) and observers.

    With a NAME, show that component: its description, the plugin that
    registered it, and its parameters (type, default, description), as a
    spec gives them. A name that two plugins register is marked as a clash:
    no spec can use it until one of them is left out.

    \b
    Examples:
      hydranet list
      hydranet list weightings
      hydranet list weightings dwa
      hydranet list tasks binary
      hydranet list observers
    """
    from hydranet.core.plugins import default_components
    components = default_components()
    if name is not None:  # (click fills KIND first: a NAME comes with one)
        click.echo(_observer_details(components.pm, name) if kind == "observers"
                   else _component_details(components, kind, name))
        return
    for section in [kind] if kind else LISTED:
        if section == "observers":
            click.echo("observers: installed plugins that watch every run (no spec names them)")
            click.echo(indent(_observers_table(components.pm)) + "\n")
            continue
        registry = components.registry(section)
        click.echo(f"{section}:")
        if section == "weightings":
            click.echo(indent(_weightings_table(registry)))
        elif section == "tasks":
            click.echo(indent(_tasks_listing(registry)))
        else:
            rows = [[_listed_name(registry, e), e.description, e.plugin] for e in _listed_entries(registry)]
            click.echo(indent(format_table(["name", "description", "plugin"], rows)))
        for note in _clash_notes(registry):
            click.echo(indent(note))
        click.echo("")


CLASH = "[clash]"


def _listed_entries(registry: Any) -> list[Any]:
    """The entries a listing shows: every registered one, and for a name several plugins registered, each
    plugin's (`Registry.claims`), so that a clash shows both sides."""
    entries, seen = [], set()
    for entry in [*registry, *(e for key in registry.conflicts() for e in registry.claims(key).values())]:
        if id(entry) not in seen:
            seen.add(id(entry))
            entries.append(entry)
    return sorted(entries, key=lambda e: e.name)  # stable: the sides of a clash in the order they registered


def _clashes(registry: Any, entry: Any) -> bool:
    return any(key in registry.conflicts() for key in (entry.name, *entry.aliases))


def _listed_name(registry: Any, entry: Any) -> str:
    """The name as a listing shows it: marked where it clashes with another plugin's."""
    return f"{entry.name} {CLASH}" if _clashes(registry, entry) else entry.name


def _clash_notes(registry: Any) -> list[str]:
    """What the clash marks of a listing mean: for each name several plugins registered, who and what to do."""
    return [f"{CLASH} {registry.conflict_message(key)}" for key in sorted(registry.conflicts())]


#: the spec section that names a component of each kind
SECTIONS = {"tasks": "tasks", "backbones": "backbone", "weightings": "weighting", "datasets": "data"}


def _component_details(components: Any, kind: str, name: str) -> str:
    """`hydranet list KIND NAME`: the component's description, plugin and parameters; each side of a clash.

    An unknown name is an UnknownNameError (did-you-mean, known names), printed as any error is.
    """
    registry = components.registry(kind)
    claims = registry.claims(name)
    if not claims:
        return _entry_details(components, kind, registry.get(name), name)
    parts = [f"{kind[:-1]} '{name}' {CLASH}: {registry.conflict_message(name)}"]
    parts += [_entry_details(components, kind, entry, name) for entry in claims.values()]
    return "\n\n".join(parts)


def _entry_details(components: Any, kind: str, entry: Any, asked: str) -> str:
    from hydranet.core.params_listing import params_rows

    factory = entry.factory
    where = getattr(factory, "__module__", None)
    about = [["description:", " ".join(entry.description.split()) or "-"],
             ["plugin:", plugin_text(components.pm, entry.plugin)],
             ["factory:", f"{where}.{getattr(factory, '__qualname__', '?')}" if where else repr(factory)]]
    if entry.aliases:
        about.append(["aliases:", ", ".join(entry.aliases)])
    if asked != entry.name and asked in entry.aliases:
        about.append(["alias of:", entry.name])
    if kind == "weightings":
        weighting_type, _, reference = _weighting_summary(entry)
        about += [["type:", weighting_type], ["reference:", reference]]
    rows = params_rows(entry.params) if entry.params is not None else []
    about.append(["in a spec:", _spec_example(kind, entry, rows)])
    width = max(len(label) for label, _ in about)
    lines = [f"{kind[:-1]} '{entry.name}'"] + [f"  {label:<{width}}  {text}" for label, text in about]
    if rows:
        lines += ["  parameters:", indent(format_table(["name", "type", "default", "description"],
                                                      [list(row) for row in rows]), "    ")]
    else:
        lines.append("  parameters: none")
    return "\n".join(lines)


def _spec_example(kind: str, entry: Any, rows: list[tuple[str, str, str, str]]) -> str:
    """How a spec names the component, with the parameters it needs: `weighting: {name: dwa}`."""
    needed = [f"{key}: {'FIELD' if key == 'label' else '...'}" for key, _, default, _ in rows
              if default == "(required)"]
    if kind != "tasks":
        return f"{SECTIONS[kind]}: {{{', '.join([f'name: {entry.name}', *needed])}}}"
    if not needed:
        return (f"tasks: [{entry.name}]   (or as a kind, with its presets: {{name: NAME, kind: {entry.name}, "
                f"label: FIELD}})")
    return f"tasks: [{{{', '.join(['name: NAME', f'kind: {entry.name}', *needed])}}}]"


def _observer_details(pm: Any, name: str) -> str:
    """`hydranet list observers NAME`: the hooks a plugin observes runs with, and where it comes from."""
    from hydranet.core.errors import UnknownNameError
    from hydranet.core.plugins import OBSERVES

    observing = {info.name: info for info in pm.info.values() if info.components.get(OBSERVES)}
    if name not in observing:
        raise UnknownNameError("observer", name, list(observing))
    info = observing[name]
    return (f"observer '{name}'\n  plugin:    {plugin_text(pm, name)}\n"
            f"  observes:  {', '.join(info.components[OBSERVES])}\n"
            f"  (no spec names it: it watches every run while it is installed and allowed)")


def _observers_table(pm: Any) -> str:
    """plugin | observes | from: the plugins `load_components` recorded as observing (`hydranet plugins`' list)."""
    from hydranet.core.plugins import OBSERVES

    rows = [[info.name, ", ".join(info.components[OBSERVES]), info.origin]
            for info in pm.info.values() if info.components.get(OBSERVES)]
    if not rows:
        return "none loaded (`hydranet new-plugin NAME --kind observer` writes one)"
    return format_table(["plugin", "observes", "from"], rows)


def _tasks_listing(registry: Any) -> str:
    """Ready tasks (named alone in a spec) apart from task kinds (which need parameters, at least a `label`)."""
    listed = _listed_entries(registry)
    ready = [e for e in listed if not e.needs_params]
    kinds = [e for e in listed if e.needs_params]
    parts = []
    if ready:
        rows = [[_listed_name(registry, e), e.description, e.plugin] for e in ready]
        parts += [f"ready tasks: name one in a spec, as in `tasks: [{ready[0].name}]`",
                  indent(format_table(["name", "description", "plugin"], rows))]
    if kinds:
        needed = {e.name: [n for n, f in e.params.model_fields.items() if f.is_required()] for e in kinds}
        first = kinds[0].name
        example = ", ".join(f"{n}: {'FIELD' if n == 'label' else '...'}" for n in needed[first])
        rows = [[_listed_name(registry, e), ", ".join(needed[e.name]), e.description, e.plugin] for e in kinds]
        parts += [f"task kinds: need parameters; make a task from a record field, as in `{{name: NAME, "
                  f"kind: {first}, {example}}}`",
                  indent(format_table(["name", "needs", "description", "plugin"], rows))]
    if ready:
        parts.append(f"a ready task serves as a kind too, with its presets: `{{name: NAME, kind: "
                     f"{ready[0].name}, label: FIELD}}`")
    return "\n".join(parts)


def _weighting_summary(entry: Any) -> tuple[str, str, str]:
    """(type, description, reference) of a registered weighting.

    Built-in weightings are classes with `description` and `reference`; a
    third-party factory may be a plain function or a class without them, so
    each falls back (to the registration's description or docstring, then to
    a placeholder) instead of failing the whole listing.
    """
    from hydranet.core.interfaces import Weighting
    from hydranet.core.weighting import GradientWeighting

    factory = entry.factory
    is_class = isinstance(factory, type)
    description = (getattr(factory, "description", "") if is_class else "") or entry.description or "-"
    reference = getattr(factory, "reference", "") or "(no reference given)"
    if is_class and issubclass(factory, GradientWeighting):
        kind = f"gradient ({getattr(factory, 'default_grad_space', 'features')})"
    elif is_class and issubclass(factory, Weighting):
        kind = "loss"
    else:
        kind = "-"
    return kind, " ".join(str(description).split()), " ".join(str(reference).split())


def _weightings_table(registry: Any) -> str:
    """name | type | description | plugin, with each weighting's reference on a line under its description, and
    its aliases (LibMTL's and torchjd's names for it) on one more."""
    summaries = [(entry, *_weighting_summary(entry)) for entry in _listed_entries(registry)]
    rows = [[_listed_name(registry, entry), kind, description, entry.plugin]
            for entry, kind, description, _ in summaries]
    lines = format_table(["name", "type", "description", "plugin"], rows).splitlines()
    widths = [len(dashes) for dashes in lines[1].split("  ")]
    pad = " " * (widths[0] + widths[1] + 4)  # the description column's start
    out = [line.rstrip() for line in lines[:2]]
    for line, (entry, _, _, reference) in zip(lines[2:], summaries):
        out += [line.rstrip(), f"{pad}reference: {reference}"]
        if entry.aliases:
            out.append(f"{pad}also named: {', '.join(entry.aliases)}")
    return "\n".join(out)


@click.command("plugins", short_help="List plugins, their components and their load errors.")
def plugins_command() -> None:
    """List loaded plugins, their versions, components and load errors.

    HYDRANET_PLUGINS=a,b limits third-party plugins to those entry points;
    HYDRANET_PLUGINS= (empty) loads built-ins only.

    Exits with status 1 when any plugin has a problem (an ERROR or WARNING
    line: it failed to load, registers nothing, or clashes with another
    plugin's name), so a plugin's CI can run it as a check. With
    `hydranet --traceback plugins`, each error raised by a plugin's code
    is followed by its whole traceback.

    \b
    Examples:
      hydranet plugins
      HYDRANET_PLUGINS= hydranet plugins    # built-ins only
      HYDRANET_PLUGINS=mine hydranet plugins || exit 1    # in a plugin's CI
      hydranet --traceback plugins
    """
    from hydranet.core.errors import raised_in, wants_traceback
    from hydranet.core.plugins import default_components

    components = default_components()
    components.record_commands()
    for info in components.pm.info.values():
        click.echo(plugin_text(components.pm, info.name))
        for kind, names in info.components.items():
            click.echo(f"    {kind}: {', '.join(names)}")
        for error in (*info.errors, *info.conflicts):
            click.echo(f"    ERROR: {error}")
            shown = _tracebacks(error) if wants_traceback() else ""
            if shown:
                click.echo(indent(shown, "        "))
        for warning in info.warnings:
            click.echo(f"    WARNING: {warning}")
    problems = components.pm.problems()
    if problems:
        click.echo(f"\n{plural(len(problems), 'plugin problem')}; the other plugins work normally.", err=True)
        if not wants_traceback() and any(raised_in(problem) for problem in problems):
            click.echo("(raised in plugin code: `hydranet --traceback plugins` prints the whole tracebacks)", err=True)
        raise SystemExit(1)


def plugin_text(pm: Any, plugin: str) -> str:
    """A plugin as `hydranet plugins` and `hydranet list KIND NAME` show it: `name  (built-in)`,
    `name  (distribution version)`, or `name  (not installed)` for one HYDRANET_PLUGINS names in vain."""
    info = pm.info.get(plugin)
    if info is None:
        return f"{plugin}  (origin unknown)"
    if info.builtin or info.distribution not in ("", "?"):
        return f"{plugin}  ({info.origin})"
    return f"{plugin}  ({'not installed' if not info.components else 'no installed distribution'})"


def _tracebacks(message: str) -> str:
    """The tracebacks of what plugin code raised that `message` tells of (`hydranet.core.errors.raised_in`)."""
    from hydranet.core.errors import raised_in, traceback_text

    return "".join(traceback_text(error) for _, error in raised_in(message) if error is not None)
