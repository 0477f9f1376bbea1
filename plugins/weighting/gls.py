"""`gls`: Geometric Loss Strategy (Chennupati, Sistu, Yogamani, Rawashdeh, CVPR Workshops 2019).

The combined loss is the geometric mean of the task losses:

    L = (prod_i L_i)^(1/K) = exp( (1/K) sum_i log L_i )

computed in the second form: a product of K losses under- or overflows long
before their logs do, and the log turns the product into a mean. Each loss is
clamped to at least 1e-8 before the log, so a batch without a single label for
a task (its masked loss is exactly 0) gives a finite value; the clamp also
stops that task's gradient for the step, and it pulls L towards 0 for the
others, which is what a geometric mean with a zero factor means.

There is nothing to tune (the paper has no hyper-parameters). Its effect on
the gradient is an implicit, loss-dependent weighting:

    dL/dL_i = L / (K * L_i)

a task whose loss is small relative to the others gets a large multiplier, so
the tasks' losses are balanced by their ratio rather than by their scale.
`weights()` reports these multipliers as of the last training step (all 1/K
before the first), detached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import StepContext, Task, Weighting

#: Smallest loss the logarithm sees: a task with no labelled row in a batch has loss exactly 0.
MIN_LOSS = 1e-8


class GeometricLoss(Weighting):
    """Geometric mean of the task losses; implicit multipliers L / (K L_i)."""

    capturable = True

    description = "Geometric Loss Strategy: the geometric mean of the task losses (no parameters)."
    reference = ("Chennupati, Sistu, Yogamani, Rawashdeh. MultiNet++: Multi-Stream Feature Aggregation and "
                 "Geometric Loss Strategy for Multi-Task Learning. CVPR Workshops 2019.")

    def __init__(self, tasks: Sequence[Task], params: None = None):
        super().__init__(tasks)
        # The last step's multipliers, for the log (persistent, like GradientWeighting's `last_weights`).
        self.register_buffer("last_weights", torch.full((self.num_tasks,), 1.0 / max(self.num_tasks, 1)))

    def combine(self, losses: Tensor) -> Tensor:
        return torch.exp(torch.log(losses.clamp_min(MIN_LOSS)).mean())

    @staticmethod
    def multipliers_for(losses: Tensor, total: Tensor) -> Tensor:
        """dL/dL_i = L / (K L_i), detached (0 where the clamp stopped the gradient)."""
        losses, total = losses.detach(), total.detach()
        multipliers = total / (losses.numel() * losses.clamp_min(MIN_LOSS))
        return torch.where(losses >= MIN_LOSS, multipliers, torch.zeros_like(multipliers))

    def backward(self, losses: Tensor, context: StepContext | None = None) -> Tensor:
        total = self.combine(losses)
        total.backward()
        self.last_weights.copy_(self.multipliers_for(losses, total))
        return total.detach()

    def weights(self) -> Tensor:
        return self.last_weights.detach()


@hookimpl
def register_weightings(register: Any) -> None:
    register("gls", GeometricLoss, description=GeometricLoss.description)
