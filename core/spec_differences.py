"""What differs between two runs' specs, as dotted keys: what `hydranet compare` lists per run.

Apart from compare.py because more than the comparison asks it: seed groups
(runs whose specs differ only in a seed), the comparison's notes on data
settings, its outputs' "differs" column, and the sweep (whether a folder it
continues trained the same thing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Spec keys that change how a run trains, not what it learns: left out of what "differs" between runs.
HOW_NOT_WHAT = {"data.workers", "data.cache", "data.placement", "data.device_memory_gb", "train.log_every",
                "train.eval_batch_size", "train.compile_in_background"}


def component_name(section: Any) -> str:
    """A component section's name, whether the spec wrote it as a mapping (`{name: dwa, ...}`) or a bare name."""
    return str(section.get("name", "?")) if isinstance(section, Mapping) else str(section)


def differences(reference: Mapping[str, Any], spec: Mapping[str, Any], prefix: str = "",
                names: bool = False) -> dict[str, Any]:
    """Dotted spec keys whose value in `spec` is not the reference's: key -> the run's value.

    Tasks are matched by name. A key only one side has maps to "(added)" or
    "(removed)". The weighting's and the backbone's names have their own
    columns; when a name differs, its parameters differ with it and are not
    listed, unless `names` (every difference, names included: whether two
    specs train the same thing, as a sweep asks of a folder it continues).
    Settings that change how a run trains, not what it learns
    (HOW_NOT_WHAT), are left out.
    """
    out: dict[str, Any] = {}
    for key in [*reference, *(k for k in spec if k not in reference)]:
        path = f"{prefix}{key}"
        if path in HOW_NOT_WHAT or (not names and path in ("weighting.name", "backbone.name")):
            continue
        if key not in spec or key not in reference:
            out[path] = "(added)" if key in spec else "(removed)"
            continue
        mine, theirs = spec[key], reference[key]
        if path == "tasks":
            mine, theirs = _by_task_name(mine), _by_task_name(theirs)
        if not names and path in ("weighting", "backbone") and component_name(mine) != component_name(theirs):
            continue
        if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            out.update(differences(theirs, mine, f"{path}.", names))
        elif mine != theirs:
            out[path] = mine
    return out


def _by_task_name(tasks: Any) -> Any:
    if not isinstance(tasks, list):
        return tasks
    return {(t.get("name") if isinstance(t, Mapping) else t): t for t in tasks}
