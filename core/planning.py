"""Planning a run: what a `train` call will run, and refusing what cannot run, before anything loads.

Split out of the engine so that the checks that need no data and no model
(a run folder another run holds, a resume that also names a spec, a resumed
run that already finished) can be made, and reported in the caller's words,
by whoever calls them first: `hydranet.train`, the CLI, or the `--nproc`
launcher before torchrun starts its processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydranet.core.errors import HydranetError, InputError, TrainingError
from hydranet.core.overrides import override_list
from hydranet.core.plugins import Components
from hydranet.core.resume import resume_checkpoint, resumed_spec
from hydranet.core.run import check_not_in_use
from hydranet.core.spec import ResolvedSpec, load_spec
from hydranet.core.wording import english_list, plural


@dataclass
class RunPlan:
    """What a `train` call will run: the resolved spec, the run folder, and the state it resumes from."""

    spec: ResolvedSpec
    out_dir: str | Path | None
    resume_state: Mapping[str, Any] | None = None
    #: how the caller names overrides, as `plan_run` was told: messages (how to resume) use the caller's words
    option: str = "overrides"


def resume_conflict(resume_option: str, resume: str | Path, given: Mapping[str, Any]) -> str | None:
    """Why continuing the run in `resume` cannot also take what `given` names (None: it gives nothing).

    `given` maps the caller's names for a spec, overrides and a run folder
    (the CLI's SPEC, --set, --out; the Python API's spec, overrides, out_dir)
    to what was passed; a resumed run takes all three from its checkpoint.
    """
    extra = [name for name, value in given.items() if value]
    if not extra:
        return None
    weights = Path(resume) if Path(resume).is_file() else Path(resume) / "last.pt"
    return (f"{resume_option} continues a run exactly as it was saved (its spec, settings and run folder); "
            f"give no {english_list(extra, 'or')} with it. To train with other settings, start a new run from "
            f"its weights with init_from: {weights}")


def plan_run(spec: ResolvedSpec | str | Path | Mapping[str, Any] | None = None, *,
             overrides: str | Iterable[str] = (), out_dir: str | Path | None = None, resume: str | Path | None = None,
             components: Components | None = None, option: str = "overrides") -> RunPlan:
    """Resolve what `train` would run, and refuse what cannot run, before any data or model is loaded.

    The `--nproc` launcher calls it too, so that a mistake is reported once, before the processes start.
    Problems name the overrides as `option`: the Python argument, or the CLI's `--set`.
    """
    overrides = override_list(overrides, option)
    if out_dir is not None and not str(out_dir).strip():  # Path("") is the current folder: never meant
        name = "--out" if option.startswith("-") else "out_dir"  # the caller's words, as run._new_folder's
        raise InputError(f"{name} is empty; name the run folder to write, or give no {name} for runs/<spec>-<time>")
    if resume is None and out_dir is not None:
        _check_folder_free(Path(out_dir))
    if resume is None:
        if isinstance(spec, ResolvedSpec):  # overrides apply to what it resolved from, then it resolves again
            resolved = load_spec(spec.to_dict(), overrides, components, option=option) if overrides else spec
        else:
            resolved = load_spec("demo" if spec is None else spec, overrides, components, option=option)
        return RunPlan(resolved, out_dir, option=option)
    problem = resume_conflict("resume", resume, {"spec": spec is not None, "overrides": overrides,
                                                 "out_dir": out_dir is not None})
    if problem:
        raise HydranetError(problem)
    given = Path(resume)  # RUN or RUN/last.pt (a run in its first epoch has none yet)
    _check_folder_free(given.parent if given.is_file() or given.name == "last.pt" else given)
    checkpoint, state = resume_checkpoint(resume)
    resolved = resumed_spec(checkpoint, state, components)
    epochs = resolved.spec.train.epochs
    # say so before loading the data and the model; a run whose last.pt holds every epoch but that has no
    # summary.json was stopped while writing its last files (SIGKILL after last.pt): resuming completes it
    if int(state["progress"].get("epoch", 1)) > epochs and (checkpoint.parent / "summary.json").is_file():
        raise TrainingError(f"nothing left to train: the run in {checkpoint.parent} already finished its "
                            f"{plural(epochs, 'epoch')}; to train it further, start a new run from its last weights "
                            f"with init_from: {checkpoint} (or from its best epoch's, {checkpoint.parent / 'best.pt'})")
    return RunPlan(resolved, checkpoint.parent, state, option=option)


def _check_folder_free(folder: Path) -> None:
    """Refuse a run folder another run is writing, before any data or model loads.

    In the process that plans the run: a single one, or the `--nproc`
    launcher, before torchrun starts. Inside a torchrun launch rank 0 takes
    the folder's lock itself and tells the other ranks when it cannot.
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        check_not_in_use(folder)
