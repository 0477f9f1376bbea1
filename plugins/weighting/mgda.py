"""`mgda`: Multiple-Gradient Descent as multi-objective optimisation (Sener and Koltun, NeurIPS 2018).

The update is the minimum-norm point of the convex hull of the task gradients:

    alpha* = argmin_{alpha in simplex} || sum_i alpha_i g_i ||^2,     d = sum_i alpha*_i g_i

It is a common descent direction for every task (or 0 at a Pareto-stationary point).
alpha* is computed on the Gram matrix. `solver: exact` (the default) solves the problem
exactly for up to 8 tasks: for every support S of alpha, the KKT system of the min-norm
point of the gradients in S (one batched solve of 2^K - 1 small systems), each candidate
moved onto the simplex and scored by ||d||^2, the best kept; all on the device, no sync.
Beyond 8 tasks, and with `solver: frank_wolfe`, it is Frank-Wolfe as in the paper's
Algorithm 2 and torchjd: start at the uniform point, step to the vertex of smallest
(G alpha)_t with exact line search, for `max_iters` iterations with the stop rule
(step < `epsilon`) kept as a mask, so it never reads a value back from the device;
defaults are torchjd's (100 iterations, epsilon 1e-3). Frank-Wolfe is exact for two
tasks but converges as O(1/t): for three or more tasks those defaults can leave the
direction over 10% away from the min-norm point. (The official code's `MinNormSolver`
is a different iteration: it starts from the best pair of tasks, solved in closed
form, and takes projected-gradient steps with a line search, up to 250 iterations,
until alpha moves by less than 1e-5.)

Scale: d is the min-norm point itself, as in the paper and torchjd: its norm is at most
that of the mean gradient, so about 1/K of `sum`'s update; K * d would match `sum`'s
scale. Tune the learning rate accordingly.

`normalization: l2` is the paper code's gradient normalisation: alpha is solved for the
unit gradients g_i / ||g_i|| and then applied to the raw gradients (d = sum alpha_i g_i),
as the official code does by weighting the raw losses with alpha. Its `loss` and `loss+`
normalisations need the loss values and are not offered here.

Default grad space: `features`. The paper's efficient variant, MGDA-UB, takes the
gradients with respect to the shared representation (an upper bound of the
parameter-space problem; the paper's experiments use it), at about the cost of one
plain step; `params` is the exact parameter-space MGDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Task
from hydranet.core.weighting import GradientParams, GradientWeighting
from hydranet.plugins.weighting._solvers import frank_wolfe_min_norm, gram, min_norm_simplex


class MGDAParams(GradientParams):
    normalization: Literal["none", "l2"] = Field(
        "none", description="Solve for unit-norm gradients (l2, the paper code's option) or the raw ones (none).")
    solver: Literal["exact", "frank_wolfe"] = Field(
        "exact", description="exact: enumerate the supports (up to 8 tasks; Frank-Wolfe beyond); frank_wolfe: "
                             "the paper's Algorithm 2 and torchjd's solver, approximate for three or more tasks.")
    max_iters: int = Field(100, ge=1, le=10_000,
                           description="Frank-Wolfe iterations (each runs on the device; frank_wolfe, or more than "
                                       "8 tasks).")
    epsilon: float = Field(1e-3, gt=0, lt=1, allow_inf_nan=False,
                           description="Frank-Wolfe stops (freezes) once its step size falls below this.")


def l2_normalized(g: Tensor) -> Tensor:
    """Gram matrix of the unit gradients g_i / ||g_i|| (a zero gradient stays zero)."""
    norms = g.diagonal().clamp_min(0).sqrt()
    inverse = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
    return g * inverse[:, None] * inverse[None, :]


class MGDA(GradientWeighting):
    """The min-norm point of the task gradients' convex hull."""

    description = "MGDA: min-norm convex combination of the task gradients (solved on the Gram matrix)."
    reference = "Sener, Koltun. Multi-Task Learning as Multi-Objective Optimization. NeurIPS 2018."

    def __init__(self, tasks: Sequence[Task], params: MGDAParams | None = None):
        params = params or MGDAParams()
        super().__init__(tasks, params.grad_space)
        self.normalization = params.normalization
        self.solver = params.solver
        self.max_iters = params.max_iters
        self.epsilon = params.epsilon

    def aggregate(self, jacobian: Tensor) -> Tensor:
        g = gram(jacobian)
        if self.normalization == "l2":
            g = l2_normalized(g)
        solve = min_norm_simplex if self.solver == "exact" else frank_wolfe_min_norm
        weights = solve(g, self.max_iters, self.epsilon).to(jacobian.dtype)
        self.last_weights.copy_(weights)
        return weights @ jacobian


@hookimpl
def register_weightings(register: Any) -> None:
    register("mgda", MGDA, params=MGDAParams, description=MGDA.description)
