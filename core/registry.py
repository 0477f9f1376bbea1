"""Name -> component registries with provenance.

A flat, greppable namespace per component kind (as in timm and torchvision's
`list_models`): each entry remembers which plugin registered it, so a clash
between two plugins, or a name nobody registered, produces a message that says
who is involved and what the known names are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from hydranet.core.errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


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
        """Validate raw params against this entry's model (pydantic errors propagate)."""
        if self.params is None:
            if raw:
                from hydranet.core.errors import ComponentError

                unexpected = sorted(raw)[0]
                raise ComponentError(f"'{self.name}' takes no parameters", field=unexpected)
            return None
        return self.params.model_validate(raw)


@dataclass
class Registry(Generic[T]):
    """Components of one kind ("task", "backbone", ...) keyed by name and alias."""

    kind: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)
    _conflicts: dict[str, list[str]] = field(default_factory=dict)

    def register(
        self,
        name: str,
        factory: Callable[..., T],
        *,
        params: type[BaseModel] | None = None,
        description: str | None = None,
        aliases: Sequence[str] = (),
        plugin: str = "<unknown>",
    ) -> None:
        """Add a component. A name already taken by another plugin becomes a conflict.

        The first registration is not silently kept: a conflicted name refuses to
        resolve, naming both plugins, because picking either one would make the
        result depend on plugin load order.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if description is None:
            doc = (getattr(factory, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        entry = Entry(name, factory, params, plugin, description, tuple(aliases))
        for key in (name, *aliases):
            owner = self._owner(key)
            if owner is not None:
                self._conflicts.setdefault(key, [owner]).append(plugin)
                continue
            if key == name:
                self._entries[name] = entry
            else:
                self._aliases[key] = name

    def _owner(self, key: str) -> str | None:
        if key in self._entries:
            return self._entries[key].plugin
        if key in self._aliases:
            return self._entries[self._aliases[key]].plugin
        if key in self._conflicts:
            return self._conflicts[key][0]
        return None

    def get(self, name: str) -> Entry[T]:
        """Look a name or alias up; unknown names get a did-you-mean and the known names."""
        if name in self._conflicts:
            plugins = " and ".join(f"'{p}'" for p in self._conflicts[name])
            raise DuplicateNameError(
                f"{self.kind} '{name}' is registered by more than one plugin: {plugins}. "
                f"Uninstall one of them, or limit the plugins loaded with HYDRANET_PLUGINS."
            )
        key = self._aliases.get(name, name)
        if key not in self._entries:
            raise UnknownNameError(self.kind, name, self.names())
        return self._entries[key]

    def names(self) -> list[str]:
        """Registered names (not aliases), sorted."""
        return sorted(self._entries)

    def conflicts(self) -> dict[str, list[str]]:
        """Names claimed by several plugins, with the plugins that claimed them."""
        return {k: list(v) for k, v in self._conflicts.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
