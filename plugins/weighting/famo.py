"""`famo`: Fast Adaptive Multitask Optimization (Liu, Feng, Stone, Liu, NeurIPS 2023).

FAMO aims to decrease every task's loss at the same *rate* (the same change
of log-loss per step), using O(1) time and memory per step: no per-task
gradients, only the losses. Task weights are z = softmax(xi) over learned
logits xi (xi = 0 at the start: equal weights).

The model's update (Algorithm 1, line 4) is the gradient of

    L = sum_i c * z_i * log(L_i + eps),      c = 1 / sum_j (z_j / (L_j + eps))   (c held constant)

so the model sees dL/dL_i = c z_i / (L_i + eps): the gradient of a weighted sum
of log-losses, normalised (by c) so the multipliers c z_i / L_i sum to 1. This is
the official implementation's `(D.log() * z / c).sum()` with its c = sum z/D.
eps = 1e-8 as there (the official `min_losses`, known lower bounds of the
losses, are 0 here).

The logits then move towards the tasks whose log-loss fell least (line 6):

    delta_i = log(L_i(before) + eps) - log(L_i(after) + eps)        (improvement of task i)
    xi <- xi - beta * (J_z^T delta + gamma * xi),    J_z^T delta = z * (delta - sum_j z_j delta_j)

J_z = diag(z) - z z^T is the softmax Jacobian: a task that improved more than
the z-weighted average loses weight. (The sign is as in the paper and the
official code, which hand `J_z^T delta` to the optimizer as the gradient to
descend.) `optimizer: adam` does this step with Adam (betas 0.9/0.999, eps
1e-8, the decay gamma added to the gradient as L2), as the official code and
LibMTL do; `sgd` is the paper's plain step.

How "after" is obtained (`update: next_batch`, the only choice): the paper
measures the losses after the model's step on the same batch, which costs a
second forward pass per step. Here the "after" value is the next step's
losses, on the next batch, which the engine computes anyway: at step t,
delta = log L(t-1) - log L(t), then the logits are updated, then the step-t
loss is formed with the new weights. This keeps FAMO at O(1) extra cost with
no engine change; the price is that delta also contains the difference
between the two batches, noise that averages out over the steps (the decay
gamma and Adam's moment estimates smooth it further). The first step has no
previous losses and makes no update (a torch.where on the step count).

Defaults: beta (`lr`) = 0.025 and gamma (`weight_decay`) = 1e-3, LibMTL's
defaults for FAMO; the official code also uses beta = 0.025 and leaves gamma to
each experiment's script (its parser's default is 0.01). Losses must be
non-negative (log L_i), as every built-in task's are.
The logits, the previous log-losses, Adam's moments and the step count are
buffers: checkpoints save them, `.to(device)` moves them, and every update is
tensor arithmetic on the device. `weights()` returns z (sums to 1).

Gradient clipping: the official `FAMO` class, given the shared parameters (as its
experiment scripts give them), clips their gradient to norm `max_norm` after the
backward pass, 1.0 by default. hydranet, like LibMTL, does not clip (and has no
clipping option): the shared gradient is applied as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import StepContext, Task, Weighting

#: Added to every loss before its log, as in the official implementation.
EPS = 1e-8
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class FAMOParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(0.025, gt=0, allow_inf_nan=False,
                      description="Step size beta of the task logits (official code and LibMTL: 0.025).")
    weight_decay: float = Field(1e-3, ge=0, allow_inf_nan=False,
                                description="Decay gamma pulling the logits towards 0 (equal weights); "
                                            "LibMTL: 1e-3.")
    optimizer: Literal["adam", "sgd"] = Field(
        "adam", description="Update rule of the logits: adam (the official code) or sgd (the paper's Algorithm 1).")
    update: Literal["next_batch"] = Field(
        "next_batch", description="Where the loss after a step comes from: the next batch's losses (no extra "
                                  "forward pass; the paper re-evaluates the same batch, which this engine does not).")


class FAMO(Weighting):
    """Softmax task weights on log-losses, adapted so every task's loss falls at the same rate."""

    capturable = True

    description = "FAMO: softmax weights on log-losses, adapted so all losses fall at the same rate; O(1) per step."
    reference = "Liu, Feng, Stone, Liu. FAMO: Fast Adaptive Multitask Optimization. NeurIPS 2023."

    def __init__(self, tasks: Sequence[Task], params: FAMOParams | None = None):
        super().__init__(tasks)
        params = params or FAMOParams()
        self.lr = params.lr
        self.weight_decay = params.weight_decay
        self.optimizer = params.optimizer
        k = self.num_tasks
        self.register_buffer("logits", torch.zeros(k))
        self.register_buffer("previous_log_losses", torch.zeros(k))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("adam_m", torch.zeros(k))
        self.register_buffer("adam_v", torch.zeros(k))

    def task_weights(self) -> Tensor:
        """z = softmax(xi), (K,), summing to 1."""
        return torch.softmax(self.logits, dim=0)

    def weights(self) -> Tensor:
        return self.task_weights().detach()

    def combine(self, losses: Tensor) -> Tensor:
        shifted = losses.float() + EPS
        z = self.task_weights()
        c = 1.0 / (z / shifted.detach()).sum()
        return (c * z * torch.log(shifted)).sum()

    def update_logits(self, losses: Tensor) -> None:
        """One logit step from the change of log-loss since the previous call (none on the first)."""
        log_now = torch.log(losses.detach().float() + EPS)
        delta = self.previous_log_losses - log_now
        z = self.task_weights()
        grad = z * (delta - (z * delta).sum()) + self.weight_decay * self.logits  # J_z^T delta + gamma xi
        if self.optimizer == "adam":
            beta1, beta2 = ADAM_BETAS
            t = self.steps.clamp_min(1).float()  # the t-th update happens at step t (step 0 makes none)
            m = beta1 * self.adam_m + (1 - beta1) * grad
            v = beta2 * self.adam_v + (1 - beta2) * grad * grad
            m_hat = m / (1 - torch.pow(beta1, t))
            v_hat = v / (1 - torch.pow(beta2, t))
            logits = self.logits - self.lr * m_hat / (v_hat.sqrt() + ADAM_EPS)
            active = self.steps > 0
            self.adam_m.copy_(torch.where(active, m, self.adam_m))
            self.adam_v.copy_(torch.where(active, v, self.adam_v))
        else:
            logits = self.logits - self.lr * grad
            active = self.steps > 0
        self.logits.copy_(torch.where(active, logits, self.logits))
        self.previous_log_losses.copy_(log_now)
        self.steps.add_(1)

    def backward(self, losses: Tensor, context: StepContext | None = None) -> Tensor:
        with torch.no_grad():
            self.update_logits(losses)
        return super().backward(losses, context)


@hookimpl
def register_weightings(register: Any) -> None:
    register("famo", FAMO, params=FAMOParams, description=FAMO.description)
