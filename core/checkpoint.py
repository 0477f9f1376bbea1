"""Checkpoints: atomic save, safe load, the resolved spec embedded.

A checkpoint holds only tensors and plain data, so it loads with
`weights_only=True` (no pickle code runs). It embeds the resolved spec and
each task's plugin (and, from `component_provenance`, the plugins of the
backbone, dataset and weighting), so `hydranet.load` can rebuild the model
without the original spec file and can say which plugin is missing when one
is.

Using a trained model needs fewer plugins than training it did
(`inference_components`): the backbone and the tasks build the model; the
dataset is read only by evaluating on the stored data, and the weighting
never. The ones not needed are answered by stand-ins, which keep their
section of the spec as it was stored. A name that a second plugin also
registers (a conflict, which a spec refuses) resolves to the plugin the
checkpoint records for it (`recorded_plugins`).

Writes go to a temporary file that is flushed, fsynced and renamed over the
old one: a crash mid-write leaves the previous checkpoint intact.

The files `hydranet export` writes beside a checkpoint (best.onnx,
best.ts.pt, best.pt2) are recognised before torch.load sees them: loading
them would fail with torch's misleading complaint (pickled code, a corrupt
zip), so the message says what the file is and which checkpoint to pass.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as metadata
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict

from hydranet.core.atomic import atomic_file
from hydranet.core.errors import CheckpointError, DataError, DuplicateNameError, UnknownNameError
from hydranet.core.export_formats import SUFFIX
from hydranet.core.plugins import ALLOW_ENV, ENTRY_POINT_GROUP, INLINE, Components, allowed_plugins, defined_inline
from hydranet.core.plugin_calls import STAND_IN
from hydranet.core.registry import Entry, Registry, describe_plugin
from hydranet.core.checkpoint_checks import damaged, structure_problems, version_problems

if TYPE_CHECKING:
    from hydranet.core.inference import TrainedModel
    from hydranet.core.plugins import PluginManager
    from hydranet.core.spec import ResolvedSpec

FORMAT = "hydranet-checkpoint"
FORMAT_VERSION = 1


#: What only continuing a run needs: last.pt keeps it; best.pt, which is for using the model (eval, predict,
#: export, `hydranet.load`, init_from, compare), does not. The optimizer's state alone is twice the weights' size
#: under AdamW.
RESUME_ONLY = ("optimizer", "scheduler", "progress")


def for_use(state: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's state less what only resuming needs (`RESUME_ONLY`): what best.pt holds."""
    return {key: value for key, value in state.items() if key not in RESUME_ONLY}


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` over `path` in one step (see `hydranet.core.atomic`).

    A write the system refuses (a full disk) is the OSError it raised: torch
    wraps it in a RuntimeError of its zip writer ("enforce fail at
    inline_container.cc"), which says nothing a user can act on.
    """
    try:
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            torch.save(obj, handle)
    except RuntimeError as error:
        cause = _os_error_in(error)
        if cause is None:
            raise
        raise cause from None


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError among `error`'s causes and contexts (torch's writer errors chain it), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def read_checkpoint(path: str | Path, *, unreadable: str = "Use another checkpoint (a run folder keeps last.pt and "
                                                            "best.pt)") -> dict[str, Any]:
    """Load and sanity-check a checkpoint file; every failure names the file.

    `unreadable` is what to do when the file cannot be loaded (cut short, damaged): the caller's way out (resume's
    differs: best.pt cannot be resumed from).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint must be a path (str or pathlib.Path); got {type(path).__name__} "
                              f"{path!r:.60}")
    path = Path(path)
    if path.is_dir():
        found = checkpoints_in(path)
        what = "a run folder" if (path / "spec.yaml").is_file() else "a folder"
        if found:
            raise CheckpointError(f"{path} is {what}, not a checkpoint; pass one of its checkpoints: "
                                  + ", ".join(map(str, found)))
        raise CheckpointError(f"{path} is {what} with no checkpoint in it; pass a checkpoint file "
                              "(a finished run's folder keeps last.pt and best.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}.")
    exported = _export_kind(path)
    if exported:
        raise _export_passed(path, exported)
    stranger = not_a_torch_file(path)
    if stranger:
        raise CheckpointError(f"cannot read checkpoint {path}: {stranger}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if path.name.endswith(SUFFIX["onnx"]):  # protobuf has no signature; a failed load plus the name will do
            raise _export_passed(path, "onnx") from None
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_failure(error)}. {unreadable}.") from None
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        if isinstance(data, Mapping) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
            raise CheckpointError(f"{path} is a state dict (tensors by name), not a hydranet checkpoint; to start a "
                                  f"backbone from it, set backbone.weights: {path} (init_from takes a run's best.pt "
                                  "or last.pt)")
        raise CheckpointError(f"{path} is not a hydranet checkpoint (no '{FORMAT}' marker); "
                              "was it written by another program?")
    version = data.get("format_version", 0)
    problems = version_problems(version)
    if problems:
        raise damaged(path, problems)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer hydranet (checkpoint format "
                              f"{version}); upgrade hydranet to read it")
    problems = structure_problems(data)
    if problems:
        raise damaged(path, problems)
    return {**data, "spec": spec_as_trained(data)}


#: Parameters added to a built-in component after checkpoints already stored its section, with the value that
#: keeps what the component did before: (section, component, plugin) -> {key: value}. A stored spec is resolved
#: (every default written out), so it lacks such a key only when it was written before the key existed.
#: utkface's `recursive` (commit 8db75a3): before it, the dataset read root's own images, never its subfolders.
ADDED_SINCE: dict[tuple[str, str, str], dict[str, Any]] = {
    ("data", "utkface", "hydranet.plugins.datasets.utkface"): {"recursive": False},
}


def spec_as_trained(data: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored spec, with each parameter added since it was written set to what matched then.

    Reloaded as stored, a key it lacks would take today's default: an old
    utkface run would read `data.recursive` as true and, resumed or evaluated
    on its stored data, take in images from root's subfolders it never saw
    (`ADDED_SINCE`). Only the built-in component gets them: a section another
    plugin provided (the checkpoint records whose) is left as stored.
    """
    spec = dict(data["spec"])
    for (section, name, plugin), added in ADDED_SINCE.items():
        stored = spec.get(section)
        recorded, _ = recorded_origin(data, section)
        if isinstance(stored, Mapping) and stored.get("name") == name and recorded in (None, plugin):
            spec[section] = {**added, **stored}
    return spec


def checkpoints_in(folder: Path) -> list[Path]:
    """The checkpoints a folder holds: its .pt files, less exports (best.ts.pt) and half-written temporaries."""
    return sorted(p for p in folder.glob("*.pt") if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(SUFFIX["torchscript"]) and _export_kind(p) is None)


_EXPORT_KINDS = {"onnx": "an exported ONNX model", "torchscript": "an exported TorchScript model",
                 "exported": "an exported torch.export program"}


def _export_kind(path: Path) -> str | None:
    """"torchscript" or "exported" for those zip archives, by their member names; None for anything else.

    A checkpoint's archive holds data.pkl and data/; TorchScript adds code/
    and constants.pkl (what torch.load itself looks for before handing the
    file to torch.jit.load, with a warning); a torch.export program holds
    models/ and archive_format instead of data.pkl (torch 2.5 and older
    wrote serialized_exported_program.json instead). Reading the zip's
    directory is cheap: the member data is not read.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return _members_kind(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def _members_kind(names: list[str]) -> str | None:
    """`_export_kind` of a zip archive by its member names (as `ZipFile.namelist` gives them)."""
    members = {name.split("/", 1)[-1] for name in names}
    if "constants.pkl" in members or any(name.startswith("code/") for name in members):
        return "torchscript"
    if ("archive_format" in members or "serialized_exported_program.json" in members
            or any(name.startswith("models/") for name in members)):
        return "exported"
    return None


def _export_passed(path: Path, fmt: str) -> CheckpointError:
    """An export file passed as a checkpoint: say what it is, and which checkpoint it came from when it is beside it."""
    ours = ""
    if fmt != "onnx":
        with zipfile.ZipFile(path) as archive:
            # extra/ in torch's current archive layout, extra_files/ in torch 2.5's and older
            if any(name.endswith(("extra/hydranet.json", "extra_files/hydranet.json")) for name in archive.namelist()):
                ours = " (written by hydranet export)"
    source = None
    if path.name.endswith(SUFFIX[fmt]):
        source = path.with_name(path.name[:-len(SUFFIX[fmt])] + ".pt")
    way_out = (f"pass {source}" if source and source != path and source.is_file()
               else "pass the .pt checkpoint it was exported from (a run folder keeps last.pt and best.pt)")
    return CheckpointError(f"{path} is {_EXPORT_KINDS[fmt]}{ours}, not a hydranet checkpoint; {way_out}")


def is_hydranet_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a file hydranet train wrote (best.pt, last.pt): its pickle carries the FORMAT marker.

    Cheap enough to ask before overwriting any file: it reads the zip's
    directory and the archive's data.pkl (the plain data, a few KiB), never
    the tensors, so a large last.pt costs what a small one does. An export
    (best.ts.pt), a file of another program, or one that cannot be read is
    not one.
    """
    path = Path(path)
    try:
        if not path.is_file():
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [name for name in names if name.count("/") == 1 and name.endswith("/data.pkl")]
            if len(pickles) != 1 or _members_kind(names) is not None:
                return False
            return FORMAT.encode() in archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError):
        return False


def never_replaced(out: str | Path, option: str = "--out") -> str:
    """Why a hydranet checkpoint is not overwritten by an output, --force or not (predict and export say it).

    --force is for replacing a file the user no longer wants (a table, an old
    export). A checkpoint is a run's result: --out runs/r1/last.pt (a slip
    of completion or of history) would destroy its weights and the means to
    resume the run, which no retrain gives back exactly.
    """
    return (f"{option} {out} is a hydranet checkpoint: writing there would destroy its weights (a last.pt's also "
            "resume its run), so a checkpoint is never replaced, even with --force. Choose another output file; "
            "if you really mean to discard the checkpoint, delete it yourself first.")


#: how the files torch.save writes begin: a zip archive, or (before torch 1.6) a pickle of protocol 2 or newer
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
_SPEC_SUFFIXES = (".yaml", ".yml", ".toml")
_WHAT_TO_PASS = "pass a .pt file written by hydranet train (a run folder keeps last.pt and best.pt)"


def not_a_torch_file(path: Path) -> str | None:
    """Why `path` is no checkpoint, when its first bytes show torch.save did not write it; None when it may be one.

    torch.load would fail on it with an internal error (a YAML spec gives
    "IndexError: pop from empty list"), which says nothing to the user. An
    empty file and an ONNX export are left to the checks after torch.load.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return None  # torch.load reports it
    if not head or head.startswith(_TORCH_MAGIC) or path.name.endswith(SUFFIX["onnx"]):
        return None
    if path.suffix.lower() in _SPEC_SUFFIXES:
        return (f"it is a spec file, not a checkpoint: train it first (hydranet train {path}) and pass the "
                "best.pt or last.pt of the run folder that writes")
    return f"it is not a checkpoint (torch.save did not write it); {_WHAT_TO_PASS}"


def _load_failure(error: Exception) -> str:
    """Why torch.load refused, without torch's advice to disable the safety check."""
    if isinstance(error, EOFError) or "EOF" in str(error):
        return "the file is empty or cut short"
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
        return ("it contains Python objects other than tensors and plain data, which hydranet never loads "
                "(loading them could run code)")
    if "PytorchStreamReader" in str(error):  # the zip is cut short or damaged; torch's paragraph says no more
        return "the file is truncated or damaged (its archive cannot be read)"
    if isinstance(error, OSError):  # EINVAL from a seek past the end of a cut file: the errno text says nothing
        return "the file is truncated or damaged (reading it failed)"
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first} (the file is truncated, damaged, or not a hydranet checkpoint)"


# ---------------------------------------------------------------- what using a checkpoint needs


#: the spec sections whose plugin `component_provenance` records, and what messages call them
SECTIONS = {"backbone": "backbone", "data": "dataset", "weighting": "weighting"}


def component_provenance(spec: ResolvedSpec, pm: PluginManager) -> dict[str, dict[str, str]]:
    """Who provided the backbone, the dataset and the weighting, for a checkpoint's "components" entry.

    `{"backbone": {"name", "plugin", "distribution"}, "data": ..., "weighting": ...}`, as the
    checkpoint's "tasks" entry records each task: loading the checkpoint where one of them is
    missing can then name the package to install.
    """
    return {section: {"name": getattr(spec, section).entry.name, **origin(getattr(spec, section).entry, pm)}
            for section in SECTIONS}


def origin(entry: Entry, pm: PluginManager) -> dict[str, str]:
    """{"plugin", "distribution"} of a registry entry: what a checkpoint records of each component and task."""
    info = pm.info.get(entry.plugin)
    distribution = info.distribution if info else "?"
    if info is not None and not info.builtin and defined_inline(pm.get_plugin(entry.plugin)):
        # a plugin made in a notebook or script: whatever distribution its caller gave it (a notebook's name),
        # there is no package to install, and a later load must be told to pass the plugin again
        distribution = INLINE
    return {"plugin": entry.plugin, "distribution": distribution}


def recorded_origin(data: Mapping[str, Any], section: str) -> tuple[str | None, str | None]:
    """(plugin, distribution) the checkpoint records for a spec section ("backbone", "data", "weighting").

    (None, None) for a checkpoint written before hydranet recorded them, or one that
    records another component under that section than its spec names.
    """
    recorded = data.get("components")
    entry = recorded.get(section) if isinstance(recorded, Mapping) else None
    if not isinstance(entry, Mapping) or entry.get("name") != _section_name(data["spec"].get(section)):
        return None, None
    plugin, distribution = entry.get("plugin"), entry.get("distribution")
    return (plugin if isinstance(plugin, str) else None,
            distribution if isinstance(distribution, str) and distribution not in ("", "?") else None)


def origin_words(plugin: str | None, distribution: str | None) -> str:
    """" from plugin 'p' (d)" (`describe_plugin`), or "" when the checkpoint does not say."""
    if plugin and distribution == INLINE:
        return f" from plugin '{plugin}', defined in the training code (not installed)"
    return f" from {describe_plugin(plugin, distribution)}" if plugin else ""


def way_to_plugin(components: Components, plugin: str | None, distribution: str | None, what: str) -> str:
    """How to make `what` ("backbone 'minicnn'") available again, as precisely as the facts allow.

    The plugin is installed but failed to load: its error. It is installed but
    HYDRANET_PLUGINS leaves it out: say so. Otherwise: the package to install,
    when the checkpoint records it.
    """
    info = components.pm.info.get(plugin) if plugin else None
    if info is not None and info.errors:
        return (f"Its {info.label} is installed but failed to load: {info.errors[0]}. Fix or reinstall "
                f"{info.distribution if info.distribution != '?' else 'its package'}")
    allowed = allowed_plugins()
    # the installed entry points, scanned once and only when the allow-list leaves out the plugin (or may)
    installed = _installed_entry_points() if allowed is not None and plugin not in allowed else set()
    left_out_here = bool(plugin) and allowed is not None and plugin not in allowed and plugin in installed
    if distribution == INLINE:  # defined in the training code: HYDRANET_PLUGINS (installed plugins) cannot bring it
        also = (f" (or, to use the installed plugin of that name, which {ALLOW_ENV} leaves out, add '{plugin}' to "
                f"{ALLOW_ENV})" if left_out_here else "")
        return (f"Pass components= with the plugin that registers {what} (as at training), as in "
                f"hydranet.load(path, components=hydranet.components(plugin)); the command line "
                f"sees installed plugins only{also}")
    if left_out_here:
        return (f"Its {components.pm.describe(plugin)} is installed, but {ALLOW_ENV} leaves it out: add '{plugin}' "
                f"to {ALLOW_ENV}")
    if distribution and distribution != "hydranet":
        return f"Install that plugin (pip install {distribution}) or allow it in {ALLOW_ENV}"
    left_out = sorted(installed - allowed) if allowed is not None and not plugin else []
    if left_out:  # the checkpoint does not say whose it is: one of these may be
        more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        return (f"{ALLOW_ENV} leaves out installed plugins that may register it: {', '.join(left_out[:5])}{more}; "
                f"add the one that does, or install the package whose plugin registers {what}")
    return (f"Install the package whose plugin registers {what} (`hydranet plugins` lists the installed ones) "
            f"or allow it in {ALLOW_ENV}")


def _installed_entry_points() -> set[str]:
    return {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


class StoredParams(BaseModel):
    """A stand-in's parameters: whatever the checkpoint stored, kept as they were, unchecked."""

    model_config = ConfigDict(extra="allow")


class UnavailableDataset:
    """A stand-in dataset's factory: building it (to read the stored data) says why it cannot be."""

    def __init__(self, why: str):
        self.why = why

    def explain(self, option: str = "--set") -> str:
        """Why the stored data cannot be read, and the ways out, naming the overrides as `option`."""
        way = ("--set 'data={name: folder, root: DIR}'" if option.startswith("-")
               else "evaluate('data={name: folder, root: DIR}', split='all')")
        return (f"{self.why}. Only evaluating on the stored data needs the dataset's plugin (predict and export "
                f"do not). Or evaluate a folder in a built-in format, replacing the data section: {way} (images "
                "and a labels.csv), or the same with name utkface (labels in the file names)")

    def __call__(self, params: Any = None) -> Any:
        raise DataError(self.explain())


def unused_weighting(tasks: Any, params: Any = None) -> None:
    """A stand-in weighting's factory: a loaded model never trains, so no weighting is built (None)."""
    return None


setattr(unused_weighting, STAND_IN, True)  # what it builds is no hydranet.Weighting, and need not be


class _WithStandIns(Registry):
    """A registry that answers some names with stand-ins, resolves some conflicted names to the plugin a
    checkpoint records (`preferred`: name -> plugin), and everything else as `base` does.

    Listings (names, did-you-mean, conflicts) are `base`'s: a stand-in is not
    an installed component, and a name two plugins claim is still claimed by both.
    """

    def __init__(self, base: Registry, stand_ins: Mapping[str, Entry], preferred: Mapping[str, str] | None = None):
        super().__init__(base.kind)
        self.base, self.stand_ins, self.preferred = base, dict(stand_ins), dict(preferred or {})

    def get(self, name: str, prefer_plugin: str | None = None) -> Entry:
        if name in self.stand_ins:
            return self.stand_ins[name]
        return self.base.get(name, prefer_plugin or self.preferred.get(name))

    def names(self) -> list[str]:
        return self.base.names()

    def conflicts(self) -> dict[str, list[str]]:
        return self.base.conflicts()

    def __contains__(self, name: object) -> bool:
        return name in self.stand_ins or name in self.base

    def __iter__(self):
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


def with_stand_ins(components: Components, weighting: Entry | None, dataset: Entry | None,
                   preferred: Mapping[str, Mapping[str, str]] | None = None) -> Components:
    """`components`, with the weighting and the dataset answered by these stand-ins (None: as `components` does).

    `preferred` ({"tasks": {name: plugin}, "backbones": ..., "datasets": ..., "weightings": ...}) resolves a
    name that several plugins claim to the entry of the plugin given, where that plugin is one of them: what a
    checkpoint records of who provided each component (`recorded_plugins`). Other conflicts still refuse.
    """
    preferred = {kind: dict(names) for kind, names in (preferred or {}).items() if names}
    stand_ins = {"weightings": weighting, "datasets": dataset}
    changes = {}
    for kind in ("tasks", "backbones", "weightings", "datasets"):
        entry = stand_ins.get(kind)
        if entry is not None or kind in preferred:
            changes[kind] = _WithStandIns(getattr(components, kind), {entry.name: entry} if entry else {},
                                          preferred.get(kind))
    return dataclasses.replace(components, **changes)


def recorded_plugins(data: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Which plugin the checkpoint records for each task kind, backbone, dataset and weighting, by registry.

    `{"tasks": {"age": "hydranet.tasks.utkface"}, "backbones": {"tiny": ...}, ...}`; what a checkpoint from
    before hydranet recorded them does not say is left out. `with_stand_ins(preferred=...)` takes it.
    """
    recorded: dict[str, dict[str, str]] = {"tasks": {}}
    for task in data["tasks"]:
        if isinstance(task.get("kind"), str) and isinstance(task.get("plugin"), str):
            recorded["tasks"][task["kind"]] = task["plugin"]
    for section, kind in (("backbone", "backbones"), ("data", "datasets"), ("weighting", "weightings")):
        plugin, _ = recorded_origin(data, section)
        name = _section_name(data["spec"].get(section))
        if plugin and isinstance(name, str):
            recorded[kind] = {name: plugin}
    return recorded


#: a spec section's registry in `Components`, and the component's kind as messages name it
_SECTION_KINDS = {"backbone": ("backbones", "backbone"), "data": ("datasets", "dataset"),
                  "weighting": ("weightings", "weighting")}


def check_plugins_available(path: Path, data: Mapping[str, Any], components: Components,
                            sections: tuple[str, ...] = ("backbone", "data", "weighting"), subject: str = "") -> None:
    """Raise a CheckpointError naming every task kind, and the component of each of `sections`, that the
    checkpoint's spec needs and `components` lack, each with its recorded plugin and how to get it back
    (`way_to_plugin`: install it, add it to HYDRANET_PLUGINS, pass an inline plugin as components=).

    Using a trained model needs its backbone and tasks (`inference_components`); resuming its run needs every
    section (`resume.resumed_spec`). The message starts with `subject` ("resuming the run in runs/x"), else `path`.
    """
    problems = []
    for task in data["tasks"]:
        if task["kind"] not in components.tasks:
            kind = f" (kind '{task['kind']}')" if task["kind"] != task["name"] else ""
            problems.append(
                f"task '{task['name']}'{kind}{origin_words(task['plugin'], task['distribution'])}, which is not "
                f"available here. "
                + way_to_plugin(components, task["plugin"], task["distribution"], f"task '{task['kind']}'"))
    for section in sections:
        registry, kind = _SECTION_KINDS[section]
        name = _section_name(data["spec"].get(section))
        if isinstance(name, str) and name not in getattr(components, registry):
            plugin, distribution = recorded_origin(data, section)
            problems.append(f"{kind} '{name}'{origin_words(plugin, distribution)}, which is not available here. "
                            + way_to_plugin(components, plugin, distribution, f"{kind} '{name}'"))
    subject = subject or str(path)
    if len(problems) == 1:
        raise CheckpointError(f"{subject} needs {problems[0]}.")
    if problems:
        raise CheckpointError(f"{subject} needs plugins that are not available here:\n"
                              + "\n".join(f"  {problem}." for problem in problems))


def inference_components(path: Path, data: Mapping[str, Any], components: Components) -> Components:
    """The components to rebuild a checkpoint's model for predict, eval and export.

    Its backbone and task plugins must be installed: a CheckpointError lists
    every one that is missing, with the plugin and package the checkpoint
    records. The weighting is never needed: a stand-in keeps the stored
    section. So is the dataset, where its plugin is missing (or its name
    taken by two plugins): its stand-in raises a DataError saying so only
    when the stored data is read.

    A name that several installed plugins claim resolves to the entry of the
    plugin the checkpoint records for it, where that is one of them
    (`recorded_plugins`): a plugin that reuses a built-in name does not make
    the models trained with the built-in unusable. A checkpoint that records
    no plugin, or another one, gets the conflict's error as a spec does.
    """
    check_plugins_available(path, data, components, ("backbone",))
    return with_stand_ins(components, _weighting_stand_in(data, components), _dataset_stand_in(path, data, components),
                          recorded_plugins(data))


def _section_name(section: Any) -> Any:
    return section.get("name") if isinstance(section, Mapping) else section


def _weighting_stand_in(data: Mapping[str, Any], components: Components) -> Entry:
    name = _section_name(data["spec"].get("weighting"))
    plugin, _ = recorded_origin(data, "weighting")
    return Entry(str(name), unused_weighting, StoredParams, plugin or "(not needed to use a trained model)",
                 "the stored weighting; a loaded model never trains")


def _dataset_stand_in(path: Path, data: Mapping[str, Any], components: Components) -> Entry | None:
    """A stand-in for the stored dataset when it cannot be built here; None when it can."""
    name = _section_name(data["spec"].get("data"))
    if not isinstance(name, str):
        return None  # the spec's own check reports it
    plugin, distribution = recorded_origin(data, "data")
    try:
        components.datasets.get(name, plugin)
        return None
    except DuplicateNameError as error:
        why = f"{path} was trained on dataset '{name}', which cannot be used here: {str(error).rstrip('.')}"
    except UnknownNameError:
        why = (f"{path} was trained on dataset '{name}'{origin_words(plugin, distribution)}, which is not available "
               f"here. " + way_to_plugin(components, plugin, distribution, f"dataset '{name}'"))
    return dataset_stand_in(name, why)


def dataset_stand_in(name: str, why: str) -> Entry:
    """An entry for the stored dataset `name` that cannot be built here, for the reason `why`."""
    return Entry(name, UnavailableDataset(why), StoredParams, "(not available)", "the stored dataset")


def load(path: str | Path, device: str | torch.device = "cpu", *,
         components: Components | None = None) -> TrainedModel:
    """Rebuild a trained model from a checkpoint: `hydranet.load(CKPT).predict(images)`.

    `components` are the plugins to rebuild it with (default: the built-in
    and installed ones). A model trained with plugins defined in a notebook
    or script needs them again: `hydranet.load(CKPT,
    components=hydranet.components(MyPlugin()))`, as `hydranet.train` was given.
    """
    from hydranet.core.inference import TrainedModel

    return TrainedModel.from_checkpoint(path, device=device, components=components)
