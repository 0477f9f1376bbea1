"""`upgrad`: Unconflicting Projection of Gradients (Quinton and Rey, 2024, "Jacobian Descent for
Multi-Objective Optimization"; torchjd's UPGrad).

Project each task gradient g_i onto the dual cone of the rows of J, the set of
directions that improve every task (J v >= 0), and average the projections:

    d = (1/K) sum_i pi_J(g_i),     pi_J(x) = argmin_{v : J v >= 0} ||v - x||^2.

By the paper's Proposition 1, pi_J(J' u) = J' w with w = argmin_{w >= u} w' G w,
G = J J^T: each projection is a K-variable quadratic programme with lower bounds,
solved for u = e_i / K. So d = (sum_i w^(i))' J, and `weights()` logs sum_i w^(i).
Like torchjd's default projector, G is normalised by its trace and a ridge `reg_eps` I
is added (torchjd: 1e-4) so the QP is strictly convex; the paper has no other
hyper-parameter (the preference vector is uniform).

The QPs are solved on the device without a solver library: for up to 8 tasks exactly,
by trying every active set in one batched linear solve and keeping the best feasible
candidate (see `_solvers.box_qp`); beyond that by `iterations` steps of accelerated
projected gradient. (torchjd calls quadprog on the host.) Unlike torchjd, a Gram matrix
whose trace is below 1e-4 is still normalised rather than zeroed, so small gradients
(those of the representation, say) do not turn UPGrad into the plain mean.

Default grad space: `params`. Jacobian descent is defined for the Jacobian of the
shared parameters; projecting the representation's gradients instead (`features`) is
cheaper but does not guarantee that the parameter update improves every task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Task
from hydranet.core.weighting import GradientParams, GradientWeighting
from hydranet.plugins.weighting._solvers import box_qp, gram


class UPGradParams(GradientParams):
    reg_eps: float = Field(1e-4, ge=0, le=1, allow_inf_nan=False,
                           description="Ridge added to the trace-normalised Gram matrix (torchjd: 1e-4).")
    iterations: int = Field(500, ge=1, le=100_000,
                            description="Projected-gradient steps per projection beyond 8 tasks (up to 8 the "
                                        "projections are exact).")


def upgrad_weights(g: Tensor, reg_eps: float = 1e-4, iterations: int = 500) -> Tensor:
    """sum_i argmin_{w >= e_i/K} w'(G/tr G + reg_eps I)w: the weights of UPGrad's direction."""
    k = g.shape[0]
    trace = g.diagonal().sum()
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    normalized = torch.where(trace > 0, g / torch.where(trace > 0, trace, 1.0), 0.0) + reg_eps * eye
    return box_qp(normalized, eye / k, iterations).sum(dim=0)


class UPGrad(GradientWeighting):
    """The mean of the task gradients, each projected onto the cone of directions that improve every task."""

    description = "UPGrad: average of each task gradient projected onto the dual cone of all of them (no conflict)."
    reference = "Quinton, Rey. Jacobian Descent for Multi-Objective Optimization. arXiv:2406.16232, 2024."
    default_grad_space = "params"

    def __init__(self, tasks: Sequence[Task], params: UPGradParams | None = None):
        params = params or UPGradParams()
        super().__init__(tasks, params.grad_space)
        self.reg_eps = params.reg_eps
        self.iterations = params.iterations

    def aggregate(self, jacobian: Tensor) -> Tensor:
        weights = upgrad_weights(gram(jacobian), self.reg_eps, self.iterations).to(jacobian.dtype)
        self.last_weights.copy_(weights)
        return weights @ jacobian


@hookimpl
def register_weightings(register: Any) -> None:
    register("upgrad", UPGrad, params=UPGradParams, description=UPGrad.description)
