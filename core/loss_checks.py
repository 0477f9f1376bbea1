"""The one check of the losses a weighting is given: a (K,) tensor, one value per task, in task order.

Every weighting's `combine`, `backward` and `epoch_end` run it, whoever
calls them: the engine, or one's own training loop (`hydranet.weighting`).
`Weighting.__init_subclass__` wraps a subclass's own overrides in it, so a
weighting plugin built on the bare base gets it as the built-ins do; the
check reads only metadata (type, shape), so it costs no host sync.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor

from hydranet.core.errors import InputError
from hydranet.core.plugin_calls import kind_of

if TYPE_CHECKING:
    from hydranet.core.interfaces import Weighting


def check_losses(weighting: Weighting, losses: object, method: str, what: str = "one loss per task") -> None:
    """Refuse `losses` unless it is a (K,) tensor, one value per task in task order: an `InputError`.

    The one check behind `combine`, a gradient weighting's `backward` and `epoch_end`, whether the engine or
    one's own training loop calls them. A (K, 1) or (N, K) tensor would broadcast into a wrong but plausible
    number, and a list or a scalar fail deep in torch naming no weighting. Only metadata is read (type,
    shape), so the check costs no host sync.
    """
    expected = weighting.num_tasks
    if isinstance(losses, Tensor) and losses.shape == (expected,):
        return
    if isinstance(losses, Tensor):
        got = f"got shape {tuple(losses.shape)}"
    elif isinstance(losses, (list, tuple)) and losses and all(isinstance(x, Tensor) and x.dim() == 0 for x in losses):
        got = f"got a {type(losses).__name__} of {len(losses)} tensors; stack them: torch.stack(losses)"
    else:
        got = f"got {kind_of(losses)}"
    raise InputError(f"{type(weighting).__name__}.{method} expects {what}, shape ({expected},) for tasks "
                     f"{', '.join(weighting.task_names)}; {got}")


def _checking(method: str, function: Callable[..., Any], what: str) -> Callable[..., Any]:
    """`function` (a subclass's own `combine`, `backward` or `epoch_end`), with `check_losses` run on its losses first.

    The losses are its first argument after `self`, given by position or by the name its signature gives them
    (`epoch_end(mean_losses=...)`, as the base class names it); a call without them is left to raise its own
    TypeError.
    """
    name = _losses_parameter(function)

    @functools.wraps(function)
    def checked(self: Weighting, *args: Any, **kwargs: Any) -> Any:
        if args or name in kwargs:
            check_losses(self, args[0] if args else kwargs[name], method, what)
        return function(self, *args, **kwargs)

    checked._checks_losses = True  # type: ignore[attr-defined]
    return checked


def _losses_parameter(function: Callable[..., Any]) -> str | None:
    """The name of `function`'s parameter after `self` (the losses), or None where it takes none by name."""
    try:
        parameters = list(inspect.signature(function).parameters.values())[1:2]
    except (TypeError, ValueError):  # a callable with no signature Python can read
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return parameters[0].name if parameters and parameters[0].kind in keyword else None


#: what each checked method takes, as `check_losses` words it
CHECKED = {"combine": "one loss per task", "backward": "one loss per task",
           "epoch_end": "the epoch's mean loss of each task"}


def check_overrides(cls: type) -> None:
    """Have a subclass's own `combine`, `backward` and `epoch_end` check their losses as the base class's do.

    A weighting that overrides them (dwa's `epoch_end`, dbmtl's `backward`, a plugin's `combine`) would
    otherwise meet a list or a (K, 1) tensor somewhere inside torch, or broadcast it into a plausible but
    wrong number; the check is the same one, wherever the call comes from.
    """
    for method, what in CHECKED.items():
        function = cls.__dict__.get(method)
        if callable(function) and not getattr(function, "_checks_losses", False):
            setattr(cls, method, _checking(method, function, what))
