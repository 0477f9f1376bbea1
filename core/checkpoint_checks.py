"""What a checkpoint must hold, checked before it is used, and the refusal that names the key at fault.

A checkpoint is a file the user may have copied, cut short or edited by hand
(torch.load of a dict, saved again). Each use reads only what it needs, so
each checks that first: `structure_problems` what every use needs (the spec,
the model, the tasks, preprocessing, each task's fitted state),
`check_task_states` whether each built task takes its stored state, and
`check_for_resume` what only a resumed run reads (optimizer, weighting,
scheduler, progress and random generators). Every refusal has one shape
(`damaged`): FILE: key problem; the file was edited or damaged: way out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hydranet.core.errors import CheckpointError, HydranetError
from hydranet.core.values import is_number, is_whole_number
from hydranet.core.wording import plural

if TYPE_CHECKING:
    from hydranet.core.interfaces import Task


#: key -> (expected type, description) of what `hydranet.load` relies on
_REQUIRED: dict[str, tuple[type, str]] = {
    "spec": (Mapping, "a mapping"),
    "model": (Mapping, "a mapping of tensors"),
    "tasks": (list, "a list of tasks"),
    "preprocess": (Mapping, "a mapping (image_size, mean, std)"),
    "task_state": (Mapping, "a mapping of task name to its fitted state"),
}

#: what a checkpoint's problems are followed by, before the way out
_DAMAGED = "the file was edited or damaged"
_USE_WAY_OUT = "use an undamaged copy of it, or another checkpoint (a run folder keeps last.pt and best.pt)"


def damaged(path: str | Path, problems: list[tuple[str, str]], way_out: str = _USE_WAY_OUT) -> CheckpointError:
    """The refusal of a checkpoint whose contents are not what hydranet wrote: the file, the key at fault, the way out.

    `problems`: (key, what is wrong with it) pairs, the key a dotted path into the
    checkpoint ("progress.best_loss"); the first is told, and how many more there are.
    """
    key, problem = problems[0]
    more = (f" (and {plural(len(problems) - 1, 'other problem')}: {', '.join(k for k, _ in problems[1:4])}"
            f"{', ...' if len(problems) > 4 else ''})") if len(problems) > 1 else ""
    return CheckpointError(f"{path}: {key} {problem}{more}; {_DAMAGED}: {way_out}")


def _shown(value: Any) -> str:
    """A stored value as a problem shows it: 'x', 3, [0.5, 0.5], a torch.uint8 tensor of shape (16,), a dict of 2 items."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)) and len(value) <= 6 and all(
            x is None or isinstance(x, (int, float, str)) for x in value) and len(repr(value)) <= 60:
        return repr(list(value))
    if isinstance(value, (list, tuple, Mapping)):
        return f"a {type(value).__name__} of {plural(len(value), 'item')}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def version_problems(version: Any) -> list[tuple[str, str]]:
    """format_version must be a whole number (a newer one than this hydranet reads is the caller's to refuse)."""
    return [] if is_whole_number(version) else [("format_version", f"is {_shown(version)}, not a whole number")]


def structure_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for key, (kind, description) in _REQUIRED.items():
        if key not in data:
            problems.append((key, "is missing"))
        elif not isinstance(data[key], kind):
            problems.append((key, f"is not {description}"))
    if problems:
        return problems
    if not all(isinstance(v, torch.Tensor) for v in data["model"].values()):
        problems.append(("model", "holds values that are not tensors"))
    for index, task in enumerate(data["tasks"]):
        if not isinstance(task, Mapping) or not {"name", "kind", "plugin", "distribution"} <= set(task):
            problems.append((f"tasks[{index}]", "lacks name, kind, plugin or distribution"))
    problems += _preprocess_problems(data["preprocess"])
    for task in data["tasks"]:
        name = task.get("name") if isinstance(task, Mapping) else None
        if not isinstance(name, str):
            continue
        if name not in data["task_state"]:
            problems.append(("task_state", f"has no entry for task '{name}' (its fitted state, e.g. the label "
                                           "scaling of a regression task)"))
        elif not isinstance(data["task_state"][name], Mapping):
            problems.append((f"task_state.{name}", f"is {_shown(data['task_state'][name])}, not a mapping"))
    if BASELINES in data and not _baselines_fit(data[BASELINES]):
        problems.append((BASELINES, "is not a mapping of task name to a list of numbers (or None)"))
    return problems


def _preprocess_problems(preprocess: Mapping[str, Any]) -> list[tuple[str, str]]:
    """image_size a positive whole number; mean and std one number per RGB channel, std above 0."""
    missing = [key for key in ("image_size", "mean", "std") if key not in preprocess]
    if missing:
        return [("preprocess", f"lacks {', '.join(missing)}")]
    problems = []
    size = preprocess["image_size"]
    if not is_whole_number(size) or size < 1:
        problems.append(("preprocess.image_size", f"is {_shown(size)}, not a positive whole number"))
    for key in ("mean", "std"):
        value = preprocess[key]
        if (not isinstance(value, (list, tuple)) or len(value) != 3
                or not all(is_number(x) and math.isfinite(x) for x in value)):
            problems.append((f"preprocess.{key}", f"is {_shown(value)}, not 3 numbers (one per RGB channel)"))
        elif key == "std" and not all(x > 0 for x in value):
            problems.append(("preprocess.std", f"is {list(value)}, not 3 numbers above 0"))
    return problems


def check_task_states(path: str | Path, data: Mapping[str, Any], tasks: Sequence[Task]) -> None:
    """Refuse a checkpoint whose stored task state a built task cannot take (a fitted value removed or not a number).

    Restoring a task's state is the task's own code (`Task.load_state_dict`):
    this tries it, task by task, and names the entry at fault. Loading it again
    afterwards gives the same task.
    """
    states = data["task_state"]
    for task in tasks:
        state = states.get(task.name, {})
        try:
            task.load_state_dict(state)
        except HydranetError:
            raise
        except Exception as error:
            raise damaged(path, [(f"task_state.{task.name}", f"cannot be restored by task '{task.name}' "
                                  f"({_error_words(error)}; it holds {_keys(state)})")]) from None


def _error_words(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"no {error.args[0]!r}" if error.args else "a key is missing"
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _keys(state: Any) -> str:
    if isinstance(state, Mapping):
        return ", ".join(f"{key}: {_shown(value)}" for key, value in state.items()) or "nothing"
    return _shown(state)


def resume_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What resuming reads beyond the model, checked before any data loads: (key, problem) pairs, as `damaged` takes.

    The weighting's and optimizer's states, the scheduler's, where the run
    started, and `progress` (`resume.Progress`): its position, its running sums
    (one per task), the best epoch so far and every random generator's state.
    A key that an older hydranet did not write is not required (weight_sums,
    labelled_steps, skipped, process_generators, scheduler, started_in). What
    only the built run can tell (an optimizer's groups against the model's
    parameters) is checked when it is restored.
    """
    problems = _weighting_problems(data.get("weighting"))
    problems += _optimizer_problems(data.get("optimizer"))
    if "scheduler" in data and not isinstance(data["scheduler"], Mapping):
        problems.append(("scheduler", f"is {_shown(data['scheduler'])}, not a mapping"))
    if data.get("started_in") is not None and not isinstance(data["started_in"], str):
        problems.append(("started_in", f"is {_shown(data['started_in'])}, not a folder's path"))
    progress = data.get("progress")
    if not isinstance(progress, Mapping):
        return problems + [("progress", f"is {_shown(progress)}, not a mapping")]
    return problems + _progress_problems(progress, len(data["tasks"]))


#: the key `nn.Module.state_dict()` gives what a module's `get_extra_state()` returns, under the module's prefix
_EXTRA_STATE = "_extra_state"


def _weighting_problems(weighting: Any) -> list[tuple[str, str]]:
    """The weighting's `state_dict()`: tensors (its parameters and buffers), and beside them any module's
    `_extra_state` ("_extra_state", "inner._extra_state"), which holds whatever `get_extra_state()` returned
    (Python numbers: `rlw`'s and `pcgrad`'s step counts). That value is the weighting's own to check, in
    `set_extra_state`, when the run is restored; any other key that holds no tensor is damage."""
    if weighting is None:
        return [("weighting", "is missing")]
    if not isinstance(weighting, Mapping):
        return [("weighting", f"is {_shown(weighting)}, not a mapping of tensors")]
    return [(f"weighting.{key}", f"is {_shown(value)}, not a tensor (only a module's {_EXTRA_STATE} may hold other "
                                 "values)")
            for key, value in weighting.items()
            if not isinstance(value, torch.Tensor)
            and not (isinstance(key, str) and key.rpartition(".")[2] == _EXTRA_STATE)]


def _optimizer_problems(optimizer: Any) -> list[tuple[str, str]]:
    if optimizer is None:
        return [("optimizer", "is missing (the optimizer's state, which a resumed run continues with)")]
    if not isinstance(optimizer, Mapping) or not {"state", "param_groups"} <= set(optimizer):
        return [("optimizer", f"is {_shown(optimizer)}, not an optimizer's state (state and param_groups)")]
    problems = []
    if not isinstance(optimizer["state"], Mapping):
        problems.append(("optimizer.state", f"is {_shown(optimizer['state'])}, not a mapping"))
    groups = optimizer["param_groups"]
    if not isinstance(groups, list) or not groups:
        return problems + [("optimizer.param_groups", f"is {_shown(groups)}, not a list of parameter groups")]
    for index, group in enumerate(groups):
        params = group.get("params") if isinstance(group, Mapping) else None
        if not isinstance(params, list) or not all(is_whole_number(x) for x in params):
            problems.append((f"optimizer.param_groups[{index}]", "is not a parameter group (its params, a list of "
                                                                 "parameter numbers, and its settings)"))
        elif "lr" in group and not is_number(group["lr"]):
            problems.append((f"optimizer.param_groups[{index}].lr", f"is {_shown(group['lr'])}, not a number"))
    return problems


def _progress_checks(tasks: int) -> dict[str, tuple[bool, Any]]:
    """progress key -> (whether resuming needs it, its check: None when the value fits, else what it is not)."""
    def whole(low: int) -> Any:
        return lambda v: None if is_whole_number(v) and v >= low else f"not a whole number of {low} or more"

    def numbers(v: Any) -> str | None:
        if isinstance(v, list) and len(v) in (0, tasks) and all(is_number(x) for x in v):
            return None
        return f"not a list of {tasks} numbers (one per task)"

    def best(v: Any) -> str | None:
        return None if is_number(v) and not math.isnan(v) else "not a number"

    def first_bad(v: Any) -> str | None:
        if isinstance(v, list) and len(v) in (0, tasks) and all(is_whole_number(x) for x in v):
            return None
        return f"not a list of {tasks} whole numbers (one per task)"

    def counts(v: Any) -> str | None:
        if isinstance(v, list) and len(v) in (0, tasks) and all(is_whole_number(x) and x >= 0 for x in v):
            return None
        return f"not a list of {tasks} whole numbers of 0 or more (one per task)"

    return {"epoch": (True, whole(1)), "step": (True, whole(0)), "epoch_order_state": (True, _generator_state),
            "generators": (True, _generator_states), "loss_sums": (True, numbers), "first_bad": (True, first_bad),
            "best_loss": (True, best), "best_epoch": (True, whole(0)), "weight_sums": (False, numbers),
            "labelled_steps": (False, counts),  # absent from a last.pt written before it: every step counts
            "skipped": (False, whole(0)), "process_generators": (False, _process_generators),
            "seconds": (False, _seconds_or_none), "epoch_train_seconds": (False, _seconds_list),
            "epoch_val_seconds": (False, _seconds_list),
            # train.monitor and train.patience (absent from a last.pt written before them: resumed as before)
            "best_value": (False, lambda v: None if v is None else best(v)),
            "epochs_without_improvement": (False, whole(0)),
            "stopped_early": (False, lambda v: None if isinstance(v, bool) else "not true or false")}


def _seconds_or_none(value: Any) -> str | None:
    return None if value is None or (is_number(value) and value >= 0) else "not a number of seconds (or null)"


def _seconds_list(value: Any) -> str | None:
    """An epoch's seconds each (null for one not timed), or null for none recorded."""
    if value is None or (isinstance(value, list) and all(_seconds_or_none(x) is None for x in value)):
        return None
    return "not a list of seconds, one per finished epoch (or null)"


def _generator_state(value: Any) -> str | None:
    """The batch order's generator (a CPU one) takes back exactly the state it gave."""
    size = torch.Generator().get_state().numel()
    if isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and tuple(value.shape) == (size,):
        return None
    return f"not a random generator's state (a torch.uint8 tensor of shape ({size},))"


def _state_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def _generator_states(value: Any, required: tuple[str, ...] = ("augment", "torch")) -> str | None:
    """{name: state}: augmentation's and torch's, "cuda:N" for each GPU, "weighting.NAME" for a weighting's own."""
    words = "a mapping of generator name to its state (torch.uint8 tensors)"
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and _state_tensor(v) for k, v in value.items()):
        return f"not {words}"
    missing = [key for key in required if key not in value]
    if missing:
        return f"not {words} with {' and '.join(repr(k) for k in required)} (it lacks {', '.join(map(repr, missing))})"
    odd = [key for key in value if key.startswith("cuda:") and not key[5:].isdigit()]
    if odd:
        return f"not {words}: {odd[0]!r} names no GPU (cuda:N)"
    return None


def _process_generators(value: Any) -> str | None:
    if isinstance(value, list) and all(_generator_states(v, required=()) is None for v in value):
        return None
    return "not a list of each process's generator states"


def _progress_problems(progress: Mapping[str, Any], tasks: int) -> list[tuple[str, str]]:
    problems = []
    for key, (needed, check) in _progress_checks(tasks).items():
        if key not in progress:
            if needed:
                problems.append((f"progress.{key}", "is missing"))
            continue
        wrong = check(progress[key])
        if wrong:
            problems.append((f"progress.{key}", f"is {_shown(progress[key])}, {wrong}"))
    epoch, best = progress.get("epoch"), progress.get("best_epoch")
    if not problems and best >= epoch:
        problems.append(("progress.best_epoch", f"is {best}, not an epoch before the one the run is at ({epoch})"))
    return problems


def check_for_resume(path: Path, data: Mapping[str, Any]) -> None:
    """Refuse a last.pt whose resume-only contents (`resume_problems`) are not what hydranet wrote."""
    problems = resume_problems(data)
    if problems:
        raise damaged(path, problems, way_out=f"resume from an undamaged copy of it, or start a new run from its "
                                              f"weights with init_from: {path}")


#: Each task's best constant prediction (its head output) fitted on the training labels, {task: [float] or None};
#: what `hydranet eval` scores as the baseline on any data. Optional: checkpoints written before it lack it.
BASELINES = "baseline_outputs"


def _baselines_fit(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(name, str) and (constant is None or (isinstance(constant, list) and all(
            is_number(x) for x in constant)))
        for name, constant in value.items())


__all__ = ["BASELINES", "damaged", "version_problems", "structure_problems", "check_task_states", "resume_problems", "check_for_resume"]
