"""The mechanism shared by loss-based weightings.

Most weightings differ only in *how they choose the weights*; the combined
loss is always a weighted sum of the per-task losses. `WeightedSum` owns that
one code path, so a weighting implements `multipliers()` (and, if it needs one,
an extra term in `combine`) and nothing else. `ConstantWeights` is the case
where the weights are fixed for the whole run (sum, static), and
`per_task_values` turns a `{task name: value}` spec parameter into a vector in
task order, rejecting names that are not tasks of this run.

Nothing here reads a tensor's value on the host: the engine calls `combine`
every step and `epoch_end` every epoch with device tensors, and a `.item()`
(or a Python `if` on a tensor) there would make the GPU wait for the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from hydranet.core.eigen import solver_dtype, symmetric_eigh
from hydranet.core.errors import ComponentError, InputError, did_you_mean
from hydranet.core.interfaces import StepContext, Task, Weighting
from hydranet.core.loss_checks import check_losses
from hydranet.core.plugin_calls import PluginCall, provenance, shape_problem


class WeightedSum(Weighting):
    """`combine(losses) = sum_i m_i * L_i`, with the multipliers `m` from `multipliers()`.

    `multipliers()` is the live vector and may carry gradient (uncertainty
    weighting learns it); `weights()` is the same vector detached, which is
    what the per-epoch log and the tests see.
    """

    def multipliers(self) -> Tensor:
        """The (K,) multipliers for this step, on the module's device; may require grad."""
        raise NotImplementedError

    def combine(self, losses: Tensor) -> Tensor:  # its losses checked as every weighting's (`loss_checks`)
        return (self.checked_multipliers() * losses).sum()

    def checked_multipliers(self) -> Tensor:
        """`multipliers()`, refused unless it holds one value per task.

        A (1,) or scalar vector would broadcast over the losses into a plausible
        but wrong sum, and a (K-1,) one fail inside torch naming no weighting;
        the shape is metadata, so the check costs no sync.
        """
        multipliers = self.multipliers()
        problem = shape_problem(multipliers, (self.num_tasks,), f"{self.num_tasks} tasks")
        if problem:
            raise PluginCall("the multipliers() of", provenance(self, "weighting"),
                             "Return one multiplier per task, in task order, from the weighting's multipliers(); "
                             "or use another weighting").fault(problem)
        return multipliers

    def weights(self) -> Tensor:
        return self.checked_multipliers().detach()


class ConstantWeights(WeightedSum):
    """Weights fixed when the weighting is built, e.g. all ones or a user's per-task table.

    They are a non-persistent buffer: `.to(device)` moves them with the model,
    but they are configuration, not learned state, so they stay out of
    `state_dict()` (a checkpoint restores them from its embedded spec instead).
    """

    capturable = True

    def __init__(self, tasks: Sequence[Task], weights: Sequence[float]):
        super().__init__(tasks)
        if len(weights) != self.num_tasks:
            raise ValueError(f"got {len(weights)} weights for {self.num_tasks} tasks")
        self.register_buffer("fixed", torch.tensor([float(w) for w in weights], dtype=torch.float32), persistent=False)

    def multipliers(self) -> Tensor:
        return self.fixed


def per_task_values(task_names: Sequence[str], values: Mapping[str, float], default: float, field: str) -> list[float]:
    """`values` (task name -> value) in task order, `default` for tasks it leaves out.

    A name that is not a task of this run is almost always a typo; silently
    ignoring it would train with the default weight the user meant to change,
    so it is a `ComponentError` at spec path `<field>.<name>` with a did-you-mean.
    """
    for name in values:
        if name not in task_names:
            raise ComponentError(
                f"unknown task '{name}' in {field};{did_you_mean(name, task_names)} tasks: {', '.join(task_names)}",
                field=f"{field}.{name}",
            )
    return [float(values.get(name, default)) for name in task_names]


def check_state_registered(weighting: Weighting) -> None:
    """Refuse a weighting that keeps tensors in plain attributes (`self.ema = torch.ones(k)`).

    nn.Module saves and moves only parameters and buffers: such a tensor is
    left out of checkpoints (a resumed run silently restarts it, so it no
    longer matches an uninterrupted one) and stays on the CPU when the model
    moves to a GPU. Called on the freshly built weighting, so the mistake is a
    spec problem before any data is read, not a wrong result later.
    """
    # getattr: what a stand-in factory returns (inference builds no weighting) may have no __dict__
    names = [name for name, value in getattr(weighting, "__dict__", {}).items() if isinstance(value, Tensor)]
    if not names:
        return
    several = len(names) > 1
    them = "them" if several else "it"
    quoted = ", ".join(f"'{name}'" for name in names)
    problem = (f"keeps the tensor attribute{'s' if several else ''} {quoted} outside its state: checkpoints "
               f"do not save {them}, so a resumed run would restart {them}, and .to(device) does not move {them}")
    fix = (f"Register {them} in __init__ with self.register_buffer('{names[0]}', tensor) for state, or with "
           "persistent=False for configuration the spec rebuilds (a learned value: an nn.Parameter)")
    raise PluginCall("", provenance(weighting, "weighting"), fix, ComponentError).fault(problem)


# ---------------------------------------------------------------- gradient-based weightings

GradSpace = Literal["features", "params"]


def per_task_gradients(losses: Tensor, inputs: Sequence[Tensor], *, batched: bool,
                       not_from: str = "") -> Tensor:
    """The (K, D) Jacobian of the K losses w.r.t. `inputs`, flattened and concatenated, in float32.

    `batched` runs one vmapped backward (`is_grads_batched`), which pays when
    the graph between the losses and `inputs` is small (the heads, for the
    shared representation); through a whole backbone the K separate backward
    passes are the dependable choice (vmap does not cover every kernel).

    A task whose loss does not depend on `inputs` gets a zero row. When none
    does (autograd finds no path from any loss to them: features recomputed
    or cloned after the heads read them, another module's parameters) the
    matrix would be all zeros and the shared part would silently not train:
    an `InputError` then, with `not_from` as its message. Which gradients
    autograd left out is known without reading a value: no host sync.
    """
    k = losses.shape[0]
    not_from = not_from or ("none of the losses depends on the tensors their gradients were asked with respect "
                            "to: the losses were not computed from them")
    if batched:
        eye = torch.eye(k, device=losses.device, dtype=losses.dtype)
        try:
            grads = torch.autograd.grad(losses, list(inputs), grad_outputs=eye, is_grads_batched=True,
                                        retain_graph=True, allow_unused=True)
        except RuntimeError:
            pass  # an op without a batching rule: fall back to the loop below
        else:
            if all(g is None for g in grads):
                raise InputError(not_from)
            return _flatten_rows(grads, inputs, k)
    # K backward passes, each written straight into its row: one copy of the K x D matrix, not two
    out = torch.empty(k, sum(x.numel() for x in inputs), device=losses.device, dtype=torch.float32)
    used = False
    for i in range(k):
        grads = torch.autograd.grad(losses[i], list(inputs), retain_graph=True, allow_unused=True)
        used = used or any(g is not None for g in grads)
        offset = 0
        for g, x in zip(grads, inputs):
            piece = out[i, offset:offset + x.numel()]
            offset += x.numel()
            if g is None:
                piece.zero_()
            else:
                piece.copy_(g.reshape(-1))
    if not used:
        raise InputError(not_from)
    return out


def _flatten_rows(grads: Sequence[Tensor | None], inputs: Sequence[Tensor], k: int) -> Tensor:
    parts = [torch.zeros(k, x.numel(), device=x.device) if g is None else g.reshape(k, -1).float()
             for g, x in zip(grads, inputs)]
    return torch.cat(parts, dim=1)


class GradientWeighting(Weighting):
    """Combines per-task gradients of the shared part into one, instead of weighting losses.

    A weighting implements `aggregate(jacobian) -> direction`: a (K, D) matrix
    of per-task gradients in, one (D,) gradient out. This class computes the
    matrix and applies the result, in one of two spaces:

    - `features` (the default): gradients w.r.t. the shared representation
      (N, F). One backward through the heads per task (batched into one vmapped
      call), then a single backward of the combined gradient through the
      backbone: about the cost of a plain step.
    - `params`: gradients w.r.t. the backbone's parameters. Exact for the
      methods' theory, but K backward passes through the backbone.

    Each head only affects its own task's loss, so the heads always receive
    the plain gradient of the sum of the losses; only the shared part sees
    the aggregated direction. Everything stays on the device: `aggregate`
    must use tensor operations with fixed iteration counts, never `.item()`.
    """

    needs_features = True
    #: The space used when the spec does not say; a weighting whose paper works in parameter space may change it.
    default_grad_space: ClassVar[GradSpace] = "features"

    def __init__(self, tasks: Sequence[Task], grad_space: GradSpace | None = None):
        super().__init__(tasks)
        self.grad_space: GradSpace = grad_space or self.default_grad_space
        self.register_buffer("last_weights", torch.ones(self.num_tasks))
        self._checked_linear = False

    def aggregate(self, jacobian: Tensor) -> Tensor:
        """(K, D) float32 per-task gradients -> (D,) combined gradient."""
        raise NotImplementedError

    def checked_aggregate(self, jacobian: Tensor) -> Tensor:
        """`aggregate(jacobian)`, refused unless it is one (D,) gradient.

        A (K, D) result (the rows not yet combined) or one of another length
        would otherwise fail deep in a `view` naming no weighting, or, in
        parameter space, be spread over the wrong parameters.
        """
        direction = self.aggregate(jacobian)
        k, d = jacobian.shape
        problem = shape_problem(direction, (d,), f"a ({k}, {d}) Jacobian")
        if problem:
            raise PluginCall("the aggregate() of", provenance(self, "weighting"),
                             "Return the one combined gradient, e.g. weights @ jacobian, from the weighting's "
                             "aggregate(); or use another weighting").fault(problem)
        return direction

    def weights(self) -> Tensor:
        """The per-task weights of the last step (weightings that have them record them in `last_weights`)."""
        return self.last_weights.detach()

    def backward(self, losses: Tensor, context: StepContext | None = None) -> Tensor:
        name = type(self).__name__
        if context is None:
            raise InputError(f"{name}.backward needs the step context, a hydranet.StepContext of the shared "
                             "representation and the parameters: backward(losses, StepContext(features=..., "
                             "shared_parameters=..., head_parameters=..., last_shared_parameters=...))")
        total = losses.sum()
        if context.head_parameters:
            torch.autograd.backward(total, inputs=list(context.head_parameters), retain_graph=True)
        if not context.shared_parameters:
            return total.detach()  # a frozen backbone: only the heads train, nothing to combine
        if self.grad_space == "features":
            if context.features is None or not context.features.requires_grad:
                got = ("context.features is None" if context.features is None else
                       "context.features carries no gradient (detached, or computed under torch.no_grad())")
                raise InputError(f"{name} (grad_space: features) combines each task's gradient with respect to "
                                 f"the shared representation, but {got}. It must be the (N, F) tensor the heads "
                                 "read, as the backbone computed it (f = backbone(x); losses from heads(f); "
                                 "StepContext(features=f, ...)); or use grad_space: params")
            not_from = (f"{name} (grad_space: features) found that none of the {self.num_tasks} losses depends on "
                        "context.features: the losses were not computed from context.features. Give the step "
                        "context the very tensor the heads read (f = backbone(x); losses from heads(f); "
                        "StepContext(features=f, ...)), not one computed again, cloned or detached")
            jacobian = per_task_gradients(losses, [context.features], batched=True, not_from=not_from)
            if context.world_size > 1:
                direction = self.distributed_direction(jacobian, context)
            else:
                direction = self.checked_aggregate(jacobian)
            context.features.backward(direction.view_as(context.features).to(context.features.dtype))
        else:
            shared = list(context.shared_parameters)
            # Each rank holds its share of every task's gradient: sum them before combining, then
            # leave 1/W of the (identical) result, since the engine sums the ranks' gradients.
            not_from = (f"{name} (grad_space: params) found that none of the {self.num_tasks} losses depends on "
                        "context.shared_parameters: the losses were not computed from the shared parameters given. "
                        "Give the step context the parameters of the shared part (the backbone) that computed "
                        "the features the heads read")
            jacobian = context.all_reduce(per_task_gradients(losses, shared, batched=False, not_from=not_from))
            direction = self.checked_aggregate(jacobian)
            _accumulate_grads(shared, direction / context.world_size if context.world_size > 1 else direction)
        return total.detach()

    def distributed_direction(self, jacobian: Tensor, context: StepContext) -> Tensor:
        """This rank's columns of the combined gradient when each rank holds its own images' columns.

        The global Jacobian is the ranks' column blocks side by side, so its
        Gram matrix G = J J^T is the sum of theirs: one all-reduce of K x K
        numbers. `aggregate` runs on a K x K stand-in R with R R^T = G (from an
        eigendecomposition), which gives the same task weights as the global
        Jacobian for any weighting that reads J only through J J^T (all the
        built-ins do), and records them in `last_weights`; this rank applies
        them to its own columns. The first call checks that the weighting's
        result is indeed `last_weights @ R`, once.
        """
        gram = context.all_reduce((jacobian @ jacobian.T).float())
        stand_in = gram_root(gram)
        combined = self.checked_aggregate(stand_in)
        if not self._checked_linear:
            expected = self.last_weights.to(stand_in.dtype) @ stand_in
            if not torch.allclose(combined, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()) + 1e-12):
                raise RuntimeError(
                    f"weighting '{type(self).__name__}' cannot run on the shared representation with several "
                    "processes: its combined gradient is not last_weights @ jacobian. Record the task weights "
                    "in self.last_weights, or use grad_space: params.")
            self._checked_linear = True
        return self.last_weights.to(jacobian.dtype) @ jacobian


def gram_root(gram: Tensor) -> Tensor:
    """A (K, K) matrix R with R R^T = `gram` (symmetric positive semi-definite): V sqrt(Lambda) from its eigenpairs.

    By `eigen.symmetric_eigh`, so a non-finite G gives a NaN root (and the
    run's loss check names the task) instead of an error inside the solver.
    Float64 where the device has it: R R^T must reproduce G closely, because
    the weightings' weights are computed from it.
    """
    values, vectors = symmetric_eigh(gram.to(solver_dtype(gram.device)))
    return (vectors * values.clamp_min(0).sqrt()).to(torch.float32)


def _grad_like(p: Tensor, values: Tensor) -> Tensor:
    """A new gradient for `p` holding `values` (flat, in `p`'s logical element order), in `p`'s dtype and layout.

    Fused optimizers walk a parameter and its gradient as raw memory, so they
    must have the same strides: a contiguous gradient for a channels_last conv
    weight raises on CUDA and, on CPU, pairs elements with the wrong weights.
    `empty_like` keeps `p`'s strides; `copy_` writes by logical index.
    """
    grad = torch.empty_like(p, memory_format=torch.preserve_format)
    grad.copy_(values.view(p.shape))
    return grad


def _accumulate_grads(parameters: Sequence[Tensor], flat: Tensor) -> None:
    """Add a flat gradient vector (the parameters' elements in logical order) into their `.grad`, slice by slice."""
    offset = 0
    for p in parameters:
        piece = flat[offset:offset + p.numel()]
        offset += p.numel()
        if p.grad is None:
            p.grad = _grad_like(p, piece)
        else:
            p.grad.add_(piece.view(p.shape).to(p.grad.dtype))



class GradientParams(BaseModel):
    """Parameters every gradient-based weighting accepts; weightings subclass it for their own."""

    model_config = ConfigDict(extra="forbid")

    grad_space: GradSpace | None = Field(
        None, description="Per-task gradients w.r.t. the shared representation (features: cheap) or the "
                          "backbone's parameters (params: exact, K backward passes); default: the weighting's own.")


__all__ = ["WeightedSum", "ConstantWeights", "per_task_values", "check_state_registered", "GradientWeighting",
           "GradientParams", "per_task_gradients", "check_losses"]
