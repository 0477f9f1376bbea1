"""Calls into plugin code, and the errors that name it when it breaks its contract.

hydranet calls plugin code (a factory, a head, a backbone, parse_label,
per_sample_loss, metrics, a weighting's combine) and relies on what it
returns. When that code raises, or returns the wrong thing, the user must
learn which task, backbone or weighting it was, which plugin (and
distribution) it came from, what was wrong and what to fix: not a traceback
from deep inside torch. Every such check goes through `PluginCall`, so the
errors read alike; `Provenance` is what a built component remembers of
where it came from.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from hydranet.core.errors import HydranetError, TrainingError, code_package, describe_raised, shown


@dataclass(frozen=True)
class Provenance:
    """Which component an object is and which plugin registered it.

    As errors write it: "task 'smile' from plugin 'shapes' (hydranet-shapes 0.3)".
    """

    component: str  #: "task 'smile'", "backbone 'tiny'", "weighting 'dwa'"
    origin: str = ""  #: "plugin 'shapes' (hydranet-shapes 0.3)"; "" when unknown

    def __str__(self) -> str:
        return f"{self.component} from {self.origin}" if self.origin else self.component


_PROVENANCE = "_hydranet_provenance"

#: set (True) on a factory that builds a stand-in, not a component (a loaded checkpoint's weighting, which is never
#: built for use): what it returns is not checked against its kind's base class (`spec.returned_problem`)
STAND_IN = "_hydranet_stand_in"


def record_provenance(component: Any, who: Provenance) -> Any:
    """Remember on a built component (a task, backbone, weighting, dataset) what it is and who registered it."""
    try:
        object.__setattr__(component, _PROVENANCE, who)
    except (AttributeError, TypeError):  # __slots__, or a builtin: errors then name its class instead
        pass
    return component


def provenance(component: Any, kind: str) -> Provenance:
    """What `record_provenance` remembered (a component built from a spec), else the `kind` and its class."""
    who = getattr(component, _PROVENANCE, None)
    if isinstance(who, Provenance):
        return who
    name = getattr(component, "name", None) if kind == "task" else None
    cls = type(component)
    return Provenance(f"{kind} '{name}'" if isinstance(name, str) else kind,
                      f"class {cls.__module__}.{cls.__qualname__}")


def kind_of(value: Any) -> str:
    """"[1.0, 2.0] (a list)": a returned value as an error shows it, with its type."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        return f"the function {value.__qualname__}"
    name = type(value).__name__
    return f"{shown(value)} (a{'n' if name[:1].lower() in 'aeiou' else ''} {name})"


#: What a call into plugin code lets through as raised. `torch.cuda.OutOfMemoryError`, not
#: `torch.OutOfMemoryError`: the latter is new in torch 2.5 (the former is its alias there).
PASS_THROUGH = (HydranetError, torch.cuda.OutOfMemoryError, MemoryError)


def _recording_cuda_graph() -> bool:
    """Whether this thread's CUDA stream is recording a graph (asked only after an exception: never per call)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


@dataclass(frozen=True)
class PluginCall:
    """One kind of call into plugin code, and the error that names it when the code breaks its contract.

    `what` and `who` name the code ("the head of" + "task 'smile' from plugin 'shapes' (hydranet-shapes
    0.3)"), `fix` says what to change. Calling it runs the code; an exception it raises, or a problem
    `check` finds with what it returned, becomes `error`:

        the head of task 'smile' from plugin 'shapes' (hydranet-shapes 0.3) returned shape (2, 3) for
        2 samples; expected (2, 1). Fix the task's build_head/out_features, or leave the task out of the spec.

    Some exceptions pass unchanged, since the plugin's code is not what to fix: a `HydranetError` (already
    worded for the user), running out of memory (the batch's size is at fault: a failed allocation that torch
    reports as a plain RuntimeError becomes `error` saying so, not blaming the code) and anything raised while a
    CUDA graph is recorded (torch refusing an op in a graph, which the recorder falls back from;
    `hydranet.core.capture`). Ctrl-C is no Exception and passes too. So do the exceptions in `passes`:
    those the contract lets the code raise as an answer (a `trivial_output` raising NotImplementedError:
    the task has no baseline).
    """

    what: str
    who: Provenance
    fix: str
    error: type[HydranetError] = TrainingError
    passes: tuple[type[Exception], ...] = ()
    #: a sentence added after `fix` for what the code raised, or "" (how hydranet calls a factory, for an
    #: exception that arguments taken in the wrong order raise)
    hint: Callable[[Exception], str] | None = None

    @property
    def subject(self) -> str:
        """The code as a message names it: "the head of task 'smile' from plugin 'shapes' (...)"."""
        return f"{self.what} {self.who}" if self.what else str(self.who)

    def fault(self, problem: str, about: str | Callable[[], str] = "", at: str = "") -> HydranetError:
        """The error for `problem` ("returned ...; expected ..."); `about` says on which input (a sample), `at`
        where the plugin's code raised it ("at src/shapes/tasks.py:12 in parse_label"), said last.

        `about` may be a function, called only when there is a fault: a call per sample need not word it.
        """
        about = about() if callable(about) else about
        where = f" ({about})" if about else ""
        return self.error(f"{self.subject} {problem}{where}." + (f" {self.fix}." if self.fix else "")
                          + (f" Raised {at}." if at else ""))

    def __call__(self, function: Callable[..., Any], *args: Any,
                 check: Callable[[Any], str | None] | None = None, about: str | Callable[[], str] = "") -> Any:
        try:
            result = function(*args)
        except PASS_THROUGH:
            raise
        except Exception as caught:  # plugin code may raise anything
            if isinstance(caught, self.passes) or _recording_cuda_graph():
                raise
            if _out_of_memory(caught):  # the sizes the spec asks for, not the plugin's code, are at fault
                raise self.error(f"{self.subject} ran out of memory ({_allocation(caught)}). The spec "
                                 "asks for more than this machine has: make the component smaller in its params "
                                 "(a backbone's width, a head's hidden size) or lower train.batch_size") from caught
            words, at = describe_raised(caught, code_package(function))
            hint = self.hint(caught) if self.hint is not None else ""
            call = replace(self, fix=f"{self.fix}. {hint}" if self.fix else hint) if hint else self
            raise call.fault(f"raised {words}", about, at) from caught
        problem = check(result) if check is not None else None
        if problem:
            raise self.fault(problem, about)
        return result


def _out_of_memory(error: Exception) -> bool:
    """A failed allocation torch reports as a RuntimeError: the CPU allocator's "can't allocate memory: you tried
    to allocate N bytes", MPS's "out of memory ... Tried to allocate"; not a plugin's own words about memory."""
    text = str(error).lower()
    return isinstance(error, RuntimeError) and "tried to allocate" in text and (
        "can't allocate memory" in text or "out of memory" in text)


def _allocation(error: Exception) -> str:
    """"it asked for 670.6 GiB at once" from the allocator's words, else their last line."""
    asked = re.search(r"tried to allocate (\d+) bytes", str(error))
    if asked:
        return f"it asked for {int(asked[1]) / 2**30:.1f} GiB at once"
    return str(error).strip().splitlines()[-1]


def shape_problem(value: Any, expected: tuple[int, ...], of: str = "") -> str | None:
    """"returned shape (2, 16) for 2 samples; expected (2, 64)", or None when `value` is a tensor of that shape.

    `of` says what the input was ("2 samples"). A shape is metadata: checking it never waits for the device.
    """
    wanted = f"a scalar, shape {expected}" if expected == () else f"{expected}"
    given = f" for {of}" if of else ""
    if not isinstance(value, Tensor):
        return f"returned {kind_of(value)}{given}; expected a tensor of shape {expected}"
    if tuple(value.shape) != expected:
        return f"returned shape {tuple(value.shape)}{given}; expected {wanted}"
    return None
