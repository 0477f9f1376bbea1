"""`hydranet.weighting`: a registered weighting, ready for a training loop of one's own.

The engine builds its weighting from a spec; a script with its own model and
loop wants the same strategy without a spec. This builds it through the same
path a spec's weighting section takes (the registry's name lookup and
did-you-mean, the params model's validation worded as spec problems are, the
factory call that names the plugin when it fails, the state check), so a
weighting behaves and fails here as it does in `hydranet train`.

A loop of one's own has task names, and perhaps no hydranet Task objects:
most weightings read nothing else of a task, but some (uncertainty) read
each task's `problem`. Which ones is not listed anywhere: a task given by
name alone carries a stand-in problem that raises, naming the weighting and
the way out, the moment a weighting reads it, so only those that need the
problems ask for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hydranet.core.errors import ComponentError, InputError, SpecError, not_a_choice, shown
from hydranet.core.interfaces import PROBLEMS, Weighting
from hydranet.core.plugins import Components, default_components
from hydranet.core.spec import ResolvedComponent
from hydranet.core.spec_problems import format_path, pydantic_problems
from hydranet.core.weighting import check_state_registered

#: the spec section the params are validated as: its did-you-mean then looks in no other section (a spec's top
#: level would suggest its own keys); the paths are shown without it, as the keyword arguments they are
_SECTION = "weighting"


class _UnknownProblem:
    """The `problem` of a task given by name: reading it (comparing, hashing, printing) raises what to pass."""

    def __init__(self, weighting: str, names: Sequence[str]):
        self._weighting, self._names = weighting, list(names)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        example = ", ".join(f"'{name}': 'regression'" for name in self._names[:2])
        raise InputError(
            f"weighting '{self._weighting}' reads each task's problem ({' or '.join(PROBLEMS)}), which task names "
            f"alone do not say: pass the tasks as a mapping of name to problem, hydranet.weighting("
            f"'{self._weighting}', {{{example}{', ...' if len(self._names) > 2 else ''}}}), or as hydranet.Task "
            "objects")

    __eq__ = __ne__ = __hash__ = __str__ = __format__ = __bool__ = __iter__ = __len__ = __contains__ = _refuse

    def __repr__(self) -> str:
        return "<problem not given>"


@dataclass(frozen=True, eq=False)  # eq=False: hashing it would read the problem
class _NamedTask:
    """A task as a weighting sees it: its name and its problem (`_UnknownProblem` when not given)."""

    name: str
    problem: Any


def weighting(name: str, tasks: Sequence[Any] | Mapping[str, str], /, *, components: Components | None = None,
              **params: Any) -> Weighting:
    """The registered weighting `name` for `tasks`, built as a spec's `weighting:` section builds it.

    `tasks`: the task names in the order of the losses (`["age", "gender"]`); a mapping of name to problem
    (`{"age": "regression", "gender": "classification"}`) for a weighting that reads the problem (uncertainty:
    a task given by name alone then raises, saying so); or hydranet Task objects. `params`: the weighting's
    parameters, as a spec gives them (`temperature=2.0` for dwa; `hydranet list weightings` and `hydranet show
    weighting NAME` list them). `components`: what `hydranet.components(MyPlugin())` returns, for a weighting
    a plugin of your own registers.

    The result is an nn.Module (docs/guides/python-api.md, "Your own training loop"): call
    `backward(losses, context)` each step with the (K,) losses in task order (`torch.stack` them) and a
    `hydranet.StepContext`, then the optimizer's `step()`; `epoch_end(mean_losses)` after each epoch; give
    `parameters()` to the optimizer (uncertainty, famo and gradnorm learn theirs) and `.to(device)` it with the
    model. An unknown name raises the registry's `UnknownNameError` (did you mean ...?); parameters that do not
    validate raise a `SpecError` listing each, worded as for a spec; tasks it cannot use an `InputError`.
    """
    registry = (components if components is not None else default_components()).weightings
    entry = registry.get(name)  # UnknownNameError, DuplicateNameError: the registry's own words
    stand_ins = _tasks(entry.name, tasks)
    source = f"hydranet.weighting('{entry.name}')"
    try:
        validated = entry.validate_params(params)
    except ValidationError as error:
        problems = pydantic_problems(error, entry.params, [_SECTION])
        raise SpecError([(path.removeprefix(f"{_SECTION}."), message) for path, message in problems], source) from None
    except ComponentError as error:
        raise SpecError([(_path(error), str(error))], source) from None
    origin = (components if components is not None else default_components()).pm.describe(entry.plugin)
    try:
        built = ResolvedComponent(_SECTION, entry, validated, origin).build(stand_ins)
        check_state_registered(built)
    except ComponentError as error:
        raise SpecError([(_path(error), str(error))], source) from None
    return built


def _path(error: ComponentError) -> str:
    """The keyword argument (and key in it) a component's complaint points at (`weights.age`), or ""."""
    return format_path(error.field.split(".")) if error.field else ""


def _tasks(weighting_name: str, tasks: Any) -> list[Any]:
    """What the factory gets: Task objects as they are; names (and their problems, when given) as stand-ins."""
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, (Sequence, Mapping)):
        raise InputError(f"tasks: expected the task names in the order of the losses (['age', 'gender']), a "
                         f"mapping of name to problem, or hydranet.Task objects; got {shown(tasks)}")
    problems = dict(tasks) if isinstance(tasks, Mapping) else {}
    items = list(tasks)
    if not items:
        raise InputError("tasks: expected at least one task")
    names: list[str] = []
    for index, item in enumerate(items):
        task_name = item if isinstance(item, str) else getattr(item, "name", None)
        if not isinstance(task_name, str):
            raise InputError(f"tasks[{index}]: expected a task name (a str) or a hydranet.Task; got {shown(item)}")
        if task_name in names:
            raise InputError(f"tasks[{index}]: task '{task_name}' is given twice; give each task once")
        names.append(task_name)
    for task_name, problem in problems.items():
        if problem not in PROBLEMS:
            raise InputError(f"tasks['{task_name}']: {not_a_choice(problem, PROBLEMS, 'problem')}")
    unknown = _UnknownProblem(weighting_name, names)
    built: list[Any] = []
    for item, task_name in zip(items, names):
        if not isinstance(item, str) and getattr(item, "problem", None) in PROBLEMS:
            built.append(item)  # a Task object: the weighting may read more of it than the name
        else:
            built.append(_NamedTask(task_name, problems.get(task_name, unknown)))
    return built


__all__ = ["weighting"]
