"""`nashmtl`: Nash-MTL, multi-task learning as a bargaining game (Navon et al., ICML 2022, Algorithm 1).

The update d = sum_i alpha_i g_i is the Nash bargaining solution: alpha > 0 solves

    (G alpha)_i = 1 / alpha_i   for every task i,      G = J J^T,

i.e. each task's directional improvement g_i . d is inversely proportional to its weight.
That is the stationarity condition of the strictly convex

    f(alpha) = 1/2 alpha' G alpha - sum_i log alpha_i,

solved here with damped Newton steps on the device: the step solves
(G + diag(1/alpha^2)) delta = G alpha - 1/alpha, and a batched line search tries 16 step
lengths up to 0.99 of the distance to the boundary alpha > 0 (plus staying put) and
keeps the lowest f, so f never rises and alpha stays positive. `optim_niter` steps
(paper code: 20), warm-started from the previous step's alpha (a buffer, saved in
checkpoints), first scaled by the t > 0 that minimises f(t alpha), so that a change
in the gradients' scale costs nothing; near the solution Newton converges
quadratically. No cvxpy, no host round trip.

The equation is the paper's, on the un-normalised G, as in the official code and
torchjd: they divide G by s = ||G||_F only to condition the solver and put s back in
the constraints (alpha_i * s * ((G/s) alpha)_i >= 1). Here the Newton steps likewise
run on G/s, whose solution a satisfies (G/s) a = 1/a, and alpha = a / sqrt(s) is then
the solution of G alpha = 1/alpha. Hence alpha'G alpha = sum_i alpha_i (G alpha)_i = K:
unclipped, ||d|| = sqrt(K) whatever the gradients' scale (d is unchanged when every
gradient is multiplied by the same factor). A
1e-8 ridge keeps alpha finite when the gradients are exactly dependent and f is
unbounded. The direction is clipped to norm `max_norm` (paper code: 1.0; 0 disables),
as torchjd does, and `update_weights_every` reuses alpha for that many steps (paper
code: 1), skipping the solve in between.

Default grad space: `params`, as in the paper (G is the Gram matrix of the shared
parameters' gradients); `features` is the cheaper representation-level analogue.
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
from hydranet.plugins.weighting._solvers import gram, take

#: Ridge added to the normalised Gram matrix G/||G||_F: bounds its solution (by about 1e4) when G is singular.
RIDGE = 1e-8
#: Step lengths tried per Newton step, as fractions of the longest allowed one.
LINE_SEARCH = 16


class NashMTLParams(GradientParams):
    update_weights_every: int = Field(1, ge=1, le=1_000_000,
                                      description="Solve for new weights every this many steps; reuse them between "
                                                  "(paper code: 1).")
    optim_niter: int = Field(20, ge=1, le=1000,
                             description="Damped Newton steps per solve, warm-started from the last weights "
                                         "(paper code: 20 CCP iterations).")
    max_norm: float = Field(1.0, ge=0, allow_inf_nan=False,
                            description="Clip the combined gradient to this norm (paper code: 1.0; 0 = no clipping).")


def nash_objective(g: Tensor, alpha: Tensor) -> Tensor:
    """f(alpha) = 1/2 alpha'G alpha - sum log alpha, for a batch of alphas (..., K)."""
    return 0.5 * ((alpha @ g) * alpha).sum(dim=-1) - alpha.log().sum(dim=-1)


def nash_solve(g: Tensor, alpha: Tensor, iterations: int) -> Tensor:
    """alpha > 0 with G alpha = 1/alpha, by damped Newton on f from the positive start `alpha`."""
    k = g.shape[0]
    fractions = 0.5 ** torch.arange(LINE_SEARCH, dtype=g.dtype, device=g.device)
    # first the best multiple of the start: f(t a) = t^2/2 a'Ga - K log t + const is least at t = sqrt(K / a'Ga),
    # which makes the warm start insensitive to the gradients' scale (G is positive definite here)
    curvature = alpha @ g @ alpha
    alpha = alpha * torch.where(curvature > 0, (k / torch.where(curvature > 0, curvature, 1.0)).sqrt(), 1.0)
    for _ in range(iterations):
        gradient = g @ alpha - 1.0 / alpha
        hessian = g + torch.diag(1.0 / alpha**2)
        step = torch.linalg.solve_ex(hessian, gradient, check_errors=False).result
        step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        # longest step keeping alpha positive: alpha - t step > 0 wherever step > 0
        limit = torch.where(step > 0, alpha / torch.where(step > 0, step, 1.0), torch.inf).amin()
        longest = torch.clamp(0.99 * limit, max=1.0)
        trial = alpha - (longest * fractions)[:, None] * step
        trial = torch.cat((trial, alpha[None]))  # staying put is a candidate
        values = nash_objective(g, trial.clamp_min(torch.finfo(g.dtype).tiny))
        values = torch.where((trial > 0).all(dim=1) & torch.isfinite(values), values, torch.inf)
        alpha = take(trial, values.argmin())
    return alpha.reshape(k)


class NashMTL(GradientWeighting):
    """Weights from the Nash bargaining solution between the tasks."""

    description = "Nash-MTL: weights alpha > 0 with G alpha = 1/alpha (Nash bargaining), solved on the device."
    reference = ("Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya. Multi-Task Learning as a "
                 "Bargaining Game. ICML 2022.")
    default_grad_space = "params"

    def __init__(self, tasks: Sequence[Task], params: NashMTLParams | None = None):
        params = params or NashMTLParams()
        super().__init__(tasks, params.grad_space)
        self.update_weights_every = params.update_weights_every
        self.optim_niter = params.optim_niter
        self.max_norm = params.max_norm
        self.register_buffer("alpha", torch.ones(self.num_tasks))
        self.steps = 0

    def aggregate(self, jacobian: Tensor) -> Tensor:
        if self.steps % self.update_weights_every == 0:
            g = gram(jacobian)
            scale = torch.linalg.matrix_norm(g)
            scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, 1.0)  # G = 0: alpha is moot, d = 0
            root = scale.sqrt()
            g = g / scale + RIDGE * torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
            start = self.alpha.to(g.dtype)  # nash_solve rescales it to G/s first
            start = torch.where(torch.isfinite(start) & (start > 0), start, torch.ones_like(start))
            # (G/s) a = 1/a  <=>  G (a/sqrt(s)) = 1/(a/sqrt(s)): the paper's alpha
            self.alpha.copy_(nash_solve(g, start, self.optim_niter) / root)
        self.steps += 1
        weights = self.alpha.to(jacobian.dtype)
        direction = weights @ jacobian
        if self.max_norm > 0:
            norm = direction.norm()
            factor = torch.where(norm > self.max_norm, self.max_norm / torch.where(norm > 0, norm, 1.0), 1.0)
            weights, direction = weights * factor, direction * factor
        self.last_weights.copy_(weights)
        return direction

    def get_extra_state(self) -> dict[str, int]:
        return {"steps": self.steps}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.steps = int(state["steps"])


@hookimpl
def register_weightings(register: Any) -> None:
    register("nashmtl", NashMTL, params=NashMTLParams, description=NashMTL.description,
             aliases=["nash_mtl", "nash-mtl"])  # LibMTL's Nash_MTL
