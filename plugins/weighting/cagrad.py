"""`cagrad`: Conflict-Averse Gradient descent (Liu, Liu, Jin, Stone, Liu, NeurIPS 2021, Algorithm 1).

Find the update d in the ball around the average gradient g0 = (1/K) sum_i g_i that
maximises the worst task's improvement, max_d min_i g_i . d s.t. ||d - g0|| <= c ||g0||.
Its dual over the simplex is

    w* = argmin_{w in simplex} F(w) = g_w . g0 + sqrt(phi) ||g_w||,   g_w = sum_i w_i g_i,   phi = c^2 ||g0||^2

and d = g0 + (sqrt(phi) / ||g_w*||) g_w*, divided by (1 + c^2) when `rescale` is on
(the official code's default `rescale=1`). The paper's multi-task experiments use
c = 0.4 (the default here, as in the official NYU-v2 run script); LibMTL defaults to
c = 0.5. c = 0 gives the plain average gradient. The weights logged
are those of d = sum_i lambda_i g_i: lambda = (1/K + sqrt(phi)/||g_w*|| w*) / (1 + c^2).
When g_w* is (numerically) zero, the point is Pareto-stationary and the update is zero
(torchjd's rule: ||g_w*|| below 1e-4 ||J||_F).

The dual is solved on the Gram matrix G (g_w . g0 = w'Gb with b = 1/K, ||g_w||^2 = w'Gw)
exactly for up to 8 tasks: on each support S the stationarity conditions
beta G_SS w + (Gb)_S = mu 1, 1'w = 1, beta = sqrt(phi)/||g_w|| become linear in
u = beta w, u = u0 + beta u1 (two solves of one KKT system), and ||g_w|| = sqrt(phi)/beta
is a quadratic in beta. Every root, and the limit w = u1 (g_w -> 0), is a candidate;
candidates are moved onto the simplex, scored by F, and the best kept. The KKT system is
regular whenever the gradients on S are affinely independent, which the optimum's support
can always be chosen to be. Beyond 8 tasks: projected gradient with Barzilai-Borwein
steps and a batched line search, `iterations` steps.

Default grad space: `params`, as in the paper (the ball and the worst-case improvement
are defined for the shared parameters' update); `features` is the cheaper analogue.
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
from hydranet.plugins.weighting._solvers import (MAX_EXACT_TASKS, gram, onto_simplex_by_scaling, project_simplex,
                                                 simplex_kkt, support_masks, take)

#: ||g_w|| below this fraction of ||J||_F means 0 is in the hull: a Pareto-stationary point (torchjd's norm_eps).
STATIONARY_TOLERANCE = 1e-4


class CAGradParams(GradientParams):
    c: float = Field(0.4, ge=0, le=100, allow_inf_nan=False,
                     description="Radius of the ball around the average gradient, relative to its norm "
                                 "(paper: 0.4 for multi-task supervised learning; 0 = plain average).")
    rescale: bool = Field(True, description="Divide the update by 1 + c^2, as the official code does by default.")
    iterations: int = Field(300, ge=1, le=100_000,
                            description="Projected-gradient steps for the dual beyond 8 tasks (up to 8 it is "
                                        "solved exactly).")


def cagrad_dual(g: Tensor, rho: Tensor, iterations: int = 300) -> Tensor:
    """argmin over the simplex of F(w) = w'G b + rho sqrt(w'Gw), b = 1/K; see the module doc."""
    k = g.shape[0]
    linear = g.mean(dim=1)  # G b: g_i . g0
    if k > MAX_EXACT_TASKS:
        return _cagrad_dual_iterative(g, linear, rho, iterations)
    support = support_masks(k, g.device)  # (S, K)
    s = support.shape[0]
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    # KKT system on [u (K), mu] (see _solvers.simplex_kkt), two right-hand sides:
    rhs = torch.zeros(k + 1, 2, dtype=g.dtype, device=g.device)
    rhs[:k, 0] = -linear  # u0: G u0 - mu0 1 = -Gb, 1'u0 = 0
    rhs[k, 1] = 1.0  # u1: G u1 - mu1 1 = 0, 1'u1 = 1 (the support's min-norm point)
    solution = simplex_kkt(g, support, rhs)
    u0, u1 = solution[..., 0], solution[..., 1]
    a = torch.einsum("sk,kl,sl->s", u1, g, u1)
    b = torch.einsum("sk,kl,sl->s", u0, g, u1)
    c = torch.einsum("sk,kl,sl->s", u0, g, u0) - rho**2
    # roots of a beta^2 + 2 b beta + c = 0, in the cancellation-free form
    root = (b * b - a * c).clamp_min(0).sqrt()
    q = -(b + torch.where(b >= 0, root, -root))
    betas = torch.stack((q / a, c / q))  # (2, S)
    candidates = torch.cat((u0[None] / betas[..., None] + u1[None], u1[None])).reshape(-1, k)  # (3S, K)
    usable = torch.cat((betas > 0, torch.ones(1, s, dtype=torch.bool, device=g.device))).reshape(-1)
    usable = usable & torch.isfinite(candidates).all(dim=1)
    candidates = torch.where(usable[:, None], candidates, zero)
    # onto the simplex: clip and renormalise (all-zero -> uniform); then the true objective
    candidates = onto_simplex_by_scaling(candidates)
    objective = candidates @ linear + rho * torch.einsum("sk,kl,sl->s", candidates, g, candidates).clamp_min(0).sqrt()
    objective = torch.where(usable, objective, torch.inf)
    return take(candidates, objective.argmin())


def _cagrad_dual_iterative(g: Tensor, linear: Tensor, rho: Tensor, iterations: int) -> Tensor:
    """Projected gradient on the simplex; each step tries 24 step sizes around the Barzilai-Borwein one at once."""
    k = g.shape[0]
    tiny = torch.finfo(g.dtype).tiny
    smooth = (g.diagonal().sum() * 1e-12).clamp_min(tiny)
    scales = 2.0 ** torch.arange(4, -20, -1, dtype=g.dtype, device=g.device)

    def objective(w: Tensor) -> Tensor:  # (..., K) -> (...)
        return w @ linear + rho * ((w @ g) * w).sum(dim=-1).clamp_min(0).sqrt()

    def gradient(w: Tensor) -> Tensor:
        gw = g @ w
        return linear + rho * gw / (w @ gw + smooth).sqrt()

    w = torch.full((k,), 1.0 / k, dtype=g.dtype, device=g.device)
    grad = gradient(w)
    step = 1.0 / g.diagonal().sum().clamp_min(tiny)
    for _ in range(iterations):
        trial = project_simplex(w - (step * scales)[:, None] * grad)  # (24, K)
        trial = torch.cat((trial, w[None]))  # staying put is a candidate: the objective never rises
        best = take(trial, objective(trial).argmin())
        new_grad = gradient(best)
        dw, dg = best - w, new_grad - grad
        curvature = dw @ dg
        step = torch.where(curvature > 0, (dw @ dw) / torch.where(curvature > 0, curvature, 1.0), step)
        w, grad = best, new_grad
    return w


class CAGrad(GradientWeighting):
    """The update that best improves the worst task within a ball around the average gradient."""

    description = "CAGrad: maximise the worst task's improvement within a ball around the average gradient."
    reference = "Liu, Liu, Jin, Stone, Liu. Conflict-Averse Gradient Descent for Multi-task Learning. NeurIPS 2021."
    default_grad_space = "params"

    def __init__(self, tasks: Sequence[Task], params: CAGradParams | None = None):
        params = params or CAGradParams()
        super().__init__(tasks, params.grad_space)
        self.c = params.c
        self.rescale = params.rescale
        self.iterations = params.iterations

    def aggregate(self, jacobian: Tensor) -> Tensor:
        g = gram(jacobian)
        k = g.shape[0]
        rho = self.c * g.mean().clamp_min(0).sqrt()  # ||g0||^2 = b'Gb = mean of G
        w = cagrad_dual(g, rho, self.iterations)
        gw_norm = (w @ g @ w).clamp_min(0).sqrt()
        moving = gw_norm > STATIONARY_TOLERANCE * g.diagonal().sum().clamp_min(0).sqrt()
        lam = torch.where(moving, rho / torch.where(moving, gw_norm, 1.0), 0.0)
        # c = 0 is the plain average whatever w is; otherwise a zero g_w* means stop (see the module doc)
        weights = torch.where(moving, 1.0 / k + lam * w, 0.0 if self.c > 0 else 1.0 / k)
        if self.rescale:
            weights = weights / (1 + self.c**2)
        weights = weights.to(jacobian.dtype)
        self.last_weights.copy_(weights)
        return weights @ jacobian


@hookimpl
def register_weightings(register: Any) -> None:
    register("cagrad", CAGrad, params=CAGradParams, description=CAGrad.description)
