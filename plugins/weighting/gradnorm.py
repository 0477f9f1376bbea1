"""`gradnorm`: Gradient Normalization (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018).

Learned task weights w (init 1) scale the losses, L = sum_i w_i L_i, and are
trained so that each task's gradient norm on the shared network tracks a target
that rises with how far behind the task is in training:

    G_i      = || grad_W (w_i L_i) ||_2 = w_i ||grad_W L_i||_2        (W: the last shared layer)
    r_i      = (L_i / L_i(0)) / mean_j (L_j / L_j(0))                   (relative inverse training rate)
    target_i = mean_j(G_j) * r_i^alpha                                   (held constant)
    L_grad   = sum_i | G_i - target_i |

L_i(0) is the first step's loss. Since G_i = w_i n_i with n_i = ||grad_W L_i||
not depending on w, the gradient needs no second-order graph:

    dL_grad / dw_i = sign(G_i - target_i) * n_i

which is written into `w.grad`; the engine's optimizer (the weighting's
parameter group, without weight decay) then steps w with the model. After each
step the paper renormalises so that sum_i w_i = K; here that happens in place
at the start of the next step (and `weights()` shows the renormalised values),
with every w_i first clamped to at least 1e-6 so a weight driven through zero
cannot flip its task's gradient. The model itself is trained on
sum_i w_i L_i with w held constant. alpha = 1.5 by default (LibMTL's default;
the paper tunes it per data set. Larger alpha pulls the training rates together
harder; 0 just equalises the gradient norms).

Which W (`grad_space`): `features` (the default) takes the norms w.r.t. the
shared representation, the output of the last shared layer, instead of that
layer's weights, as LibMTL does when it uses representation gradients: one
batched backward through the heads only, so a step costs about a plain one.
`params` takes them w.r.t. the parameters of the backbone's last module that
has any (the paper's choice), which also backpropagates into that layer.

All of it is tensor arithmetic on the device; L_i(0) and the step count are
buffers, set through torch.where on the count, so checkpoints resume exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import StepContext, Task
from hydranet.core.weighting import WeightedSum, per_task_gradients

#: Floor of a task weight before renormalising, and of L_i(0) in the loss ratio.
MIN_WEIGHT = 1e-6
MIN_INITIAL_LOSS = 1e-8


class GradNormParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(1.5, ge=0, allow_inf_nan=False,
                         description="Strength alpha of the pull towards a common training rate (LibMTL: 1.5).")
    grad_space: Literal["features", "params"] = Field(
        "features", description="Gradient norms w.r.t. the shared representation (features: the last shared "
                                "layer's output, cheap) or the last shared layer's parameters (params: the paper's).")


class GradNorm(WeightedSum):
    """Learned weights that balance the tasks' gradient norms by their relative training rates."""

    description = "GradNorm: learned weights balancing each task's gradient norm by its relative training rate."
    reference = ("Chen, Badrinarayanan, Lee, Rabinovich. GradNorm: Gradient Normalization for Adaptive Loss "
                 "Balancing in Deep Multitask Networks. ICML 2018.")
    needs_features = True

    def __init__(self, tasks: Sequence[Task], params: GradNormParams | None = None):
        super().__init__(tasks)
        params = params or GradNormParams()
        self.alpha = params.alpha
        self.grad_space = params.grad_space
        self.task_weights = nn.Parameter(torch.ones(self.num_tasks))
        self.register_buffer("initial_losses", torch.ones(self.num_tasks))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def normalised(self) -> Tensor:
        """w clamped positive and rescaled to sum to K, detached."""
        w = self.task_weights.detach().clamp_min(MIN_WEIGHT)
        return w * (self.num_tasks / w.sum())

    def multipliers(self) -> Tensor:
        return self.normalised()

    def gradient_norms(self, losses: Tensor, context: StepContext) -> Tensor:
        """n_i = ||grad L_i|| w.r.t. the representation or the last shared layer's parameters, (K,)."""
        if self.grad_space == "features":
            if context.features is None:
                raise RuntimeError("gradnorm works on the shared representation, but the engine gave no features")
            inputs = [context.features]
        else:
            inputs = list(context.last_shared_parameters)
            if not inputs:
                raise RuntimeError("gradnorm (grad_space: params) needs the last shared layer's parameters, "
                                   "but the backbone has none that require grad")
        jacobian = per_task_gradients(losses, inputs, batched=True)
        if context.world_size == 1:
            return jacobian.norm(dim=1)
        if self.grad_space == "features":  # each rank holds its own images' rows: add the squared norms
            return context.all_reduce(jacobian.pow(2).sum(dim=1)).sqrt()
        return context.all_reduce(jacobian).norm(dim=1)  # each rank holds a share of the same gradient

    def weight_gradient(self, losses: Tensor, norms: Tensor) -> Tensor:
        """d L_grad / d w for this step's losses and gradient norms; records L(0) on the first step."""
        losses = losses.detach().float()
        self.initial_losses.copy_(torch.where(self.steps == 0, losses, self.initial_losses))
        w = self.task_weights.detach()
        g = w * norms
        ratio = losses / self.initial_losses.clamp_min(MIN_INITIAL_LOSS)
        relative = ratio / ratio.mean().clamp_min(torch.finfo(ratio.dtype).tiny)
        target = g.mean() * relative.pow(self.alpha)
        return torch.sign(g - target) * norms

    def backward(self, losses: Tensor, context: StepContext | None = None) -> Tensor:
        if context is None:
            raise RuntimeError("gradnorm needs the step context (features and parameters)")
        with torch.no_grad():
            self.task_weights.copy_(self.normalised())
        if self.grad_space == "features":
            frozen = context.features is None or not context.features.requires_grad
        else:
            frozen = not context.last_shared_parameters
        if frozen:  # a frozen backbone: no shared gradients to balance, weights stay as they are
            return super().backward(losses, context)
        norms = self.gradient_norms(losses, context)
        with torch.no_grad():
            grad = self.weight_gradient(losses, norms).to(self.task_weights.dtype)
            if self.task_weights.grad is None:
                self.task_weights.grad = grad
            else:
                self.task_weights.grad.add_(grad)
            self.steps.add_(1)
        return super().backward(losses, context)


@hookimpl
def register_weightings(register: Any) -> None:
    register("gradnorm", GradNorm, params=GradNormParams, description=GradNorm.description)
