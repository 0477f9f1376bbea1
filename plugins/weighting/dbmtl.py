"""`dbmtl`: Dual-Balancing Multi-Task Learning (Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang, Kwok, 2023).

Two balancing steps, one for the losses' scales and one for the gradients':

1. Loss scale: every task is trained on log(L_i + 1e-8) instead of L_i, whose
   gradient grad L_i / L_i no longer depends on the loss's unit.
2. Gradient magnitude: with g_i the gradient of log(L_i + 1e-8) w.r.t. the
   shared part, keep an exponential moving average

       g^_i(t) = beta_t * g^_i(t-1) + (1 - beta_t) * g_i(t),    beta_t = beta / t^sigma,   g^_i(0) = 0

   and update the shared part along

       d = sum_i (max_j ||g^_j|| / (||g^_i|| + 1e-8)) * g^_i

   so every task's (smoothed) gradient gets the norm of the largest one.

Defaults beta = 0.9, sigma = 0 (a constant beta), as in LibMTL's DB_MTL, the
authors' own implementation (and their `DB_beta` / `DB_beta_sigma` options).
The heads receive the gradient of their own task's log-loss, as there (each
head only affects its task, so nothing else needs balancing for it).
`weights()` is the last step's scale factors max_j ||g^_j|| / ||g^_i|| (they
multiply log-loss gradients: the multiplier of the raw loss L_i is that factor
divided by L_i).

Where g lives (`grad_space`):

- `params`: the backbone's parameters, the paper's and LibMTL's algorithm
  exactly: a (K, D) moving average of the parameter gradients (a buffer of K
  times the backbone's size, allocated on the first step and saved in
  checkpoints), K backward passes per step.
- `features` (the default, as for `mgda`, `imtl` and `aligned`; `pcgrad`, `cagrad`,
  `nashmtl` and `upgrad` default to `params`): the
  shared representation of the batch, one batched backward through the heads.
  A row of a batch's representation gradient belongs to that batch's image,
  so averaging the gradients themselves over steps would mix unrelated images;
  instead the moving average is kept of each task's gradient norm,
  n^_i(t) = beta_t n^_i(t-1) + (1 - beta_t) ||g_i(t)||, and the step's own
  gradients are rescaled: d = sum_i (max_j n^_j / (n^_i + 1e-8)) g_i. The
  factors are ratios, so the zero start of the average cancels out of them.
  (LibMTL refuses representation gradients for DB-MTL; this is the closest
  well-defined variant.)

Everything is tensor arithmetic on the device; beta_t comes from a step-count
buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import StepContext, Task
from hydranet.core.weighting import GradientParams, GradientWeighting

#: Added to each loss before the log (LibMTL's `torch.log(losses + 1e-8)`), and to norms before dividing.
LOSS_EPS = 1e-8
NORM_EPS = 1e-8


class DBMTLParams(GradientParams):
    beta: float = Field(0.9, ge=0, lt=1, allow_inf_nan=False,
                        description="Moving-average factor beta of the task gradients (LibMTL DB_beta: 0.9).")
    beta_sigma: float = Field(0.0, ge=0, allow_inf_nan=False,
                              description="Decay sigma of the factor, beta_t = beta / t^sigma (LibMTL DB_beta_sigma: "
                                          "0, a constant beta).")


class DualBalancing(GradientWeighting):
    """Log-losses for scale balance, then every task gradient rescaled to the largest (moving-average) norm."""

    description = "DB-MTL: log-losses, then each task's gradient rescaled to the largest (moving-average) norm."
    reference = ("Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang, Kwok. Dual-Balancing for Multi-Task Learning. "
                 "arXiv:2308.12029, 2023.")

    def __init__(self, tasks: Sequence[Task], params: DBMTLParams | None = None):
        params = params or DBMTLParams()
        super().__init__(tasks, grad_space=params.grad_space)
        self.beta = params.beta
        self.beta_sigma = params.beta_sigma
        # features: the (K,) average gradient norms; params: the (K, D) average gradients, sized on first use.
        shape = (self.num_tasks,) if self.grad_space == "features" else (self.num_tasks, 0)
        self.register_buffer("ema", torch.zeros(shape))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def beta_t(self) -> Tensor:
        """beta / t^sigma for the step being taken (t counts from 1)."""
        t = (self.steps + 1).float()
        return self.beta / t.pow(self.beta_sigma)

    def aggregate(self, jacobian: Tensor) -> Tensor:
        beta = self.beta_t()
        with torch.no_grad():
            if self.grad_space == "features":
                norms = jacobian.norm(dim=1)
                self.ema.copy_(beta * self.ema + (1 - beta) * norms)
                scale = self.ema.max() / (self.ema + NORM_EPS)
                direction = scale @ jacobian
            else:
                if self.ema.shape != jacobian.shape:  # shape is metadata: the first step sizes the buffer
                    self.ema = torch.zeros_like(jacobian)
                self.ema.lerp_(jacobian, 1 - beta)  # beta * ema + (1 - beta) * g, in one pass over K x D
                norms = self.ema.norm(dim=1)
                scale = norms.max() / (norms + NORM_EPS)
                direction = scale @ self.ema
            self.last_weights.copy_(scale)
            self.steps.add_(1)
        return direction

    def backward(self, losses: Tensor, context: StepContext | None = None) -> Tensor:
        return super().backward(torch.log(losses.float() + LOSS_EPS), context)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # A params-space average is sized by the model; take the checkpoint's size before copying into it.
        saved = state_dict.get(prefix + "ema")
        if saved is not None and saved.shape != self.ema.shape and self.grad_space == "params":
            self.ema = torch.zeros_like(saved, device=self.ema.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@hookimpl
def register_weightings(register: Any) -> None:
    register("dbmtl", DualBalancing, params=DBMTLParams, description=DualBalancing.description,
             aliases=["db_mtl", "db-mtl"])  # LibMTL's DB_MTL
