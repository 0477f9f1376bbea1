"""`pcgrad`: Projecting Conflicting Gradients (Yu et al., NeurIPS 2020, "Gradient Surgery", Algorithm 1).

For each task i, start from g_i^PC = g_i and visit the other tasks j in a random order;
whenever g_i^PC . g_j < 0, drop the component of g_i^PC along g_j:

    g_i^PC <- g_i^PC - (g_i^PC . g_j / ||g_j||^2) g_j

The update is the sum of the projected gradients, sum_i g_i^PC (as in the paper and in
torchjd). The paper has no hyper-parameter.

On the Gram matrix G = J J^T: g_i^PC = sum_j W_ij g_j with W_i = e_i at the start, and
g_i^PC . g_j = (W_i G)_j, so a projection is W_ij -= (W_i G)_j / G_jj. All K rows advance
together (row i handles the s-th task of its own order at step s; the step where a row
meets itself is masked out), so the loop has K steps of K x K tensor work. The
direction is (sum_i W_i) J; `weights()` logs sum_i W_i, how much of each g_j the update
holds (all ones when nothing conflicts).

Random order: step s draws K orders as the argsort of a K x K uniform sample from a
generator seeded with (seed, s), made on the Jacobian's device. `seed` defaults to a
draw from torch's global generator when the weighting is built, so the run's seed fixes
it; the seed and the step count are saved in `state_dict()`, so a resumed run repeats
the orders an uninterrupted run would have used.

Default grad space: `params`. The paper projects gradients of the shared parameters,
and a projection does not commute with the backbone's Jacobian, so surgery on the
representation's gradients is a different method (cheaper, still available as
`grad_space: features`); the cost is K backward passes through the backbone.
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
from hydranet.plugins.weighting._solvers import gram

_GOLDEN = 0x9E3779B97F4A7C15  # spreads consecutive step numbers over the seed space


class PCGradParams(GradientParams):
    seed: int | None = Field(None, ge=0, le=2**63 - 1,
                             description="Seed of the random task order; default: drawn from torch's global "
                                         "generator when the weighting is built (so the training seed fixes it).")


def pcgrad_coefficients(g: Tensor, orders: Tensor) -> Tensor:
    """W (K, K) with g_i^PC = sum_j W_ij g_j, for Gram matrix `g` and visiting orders (K, K) (row i: row i's order).

    Each row of `orders` is a permutation of 0..K-1; the entry equal to the row's own
    index is skipped, as in the paper's loop over j != i.
    """
    k = g.shape[0]
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    rows = torch.arange(k, device=g.device)
    diagonal = g.diagonal()
    w = eye
    for step in range(k):
        target = orders[:, step]  # row i projects against task target[i] now
        onehot = eye[target]
        inner = ((w @ g) * onehot).sum(dim=1)  # g_i^PC . g_target
        conflict = (inner < 0) & (target != rows)
        scale = torch.where(conflict, inner / torch.where(conflict, diagonal[target], 1.0), 0.0)
        w = w - scale[:, None] * onehot
    return w


class PCGrad(GradientWeighting):
    """Gradient surgery: each task's gradient loses its components that conflict with the others'."""

    description = "PCGrad: project each task gradient off the others' it conflicts with (random order), then sum."
    reference = "Yu, Kumar, Gupta, Levine, Hausman, Finn. Gradient Surgery for Multi-Task Learning. NeurIPS 2020."
    default_grad_space = "params"

    def __init__(self, tasks: Sequence[Task], params: PCGradParams | None = None):
        params = params or PCGradParams()
        super().__init__(tasks, params.grad_space)
        self.seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.steps = 0

    def orders(self, device: torch.device) -> Tensor:
        """This step's K visiting orders, (K, K); advances the step count."""
        k = self.num_tasks
        generator = None
        if device.type != "meta":  # meta tensors have no values to draw
            generator = torch.Generator(device=device)
            generator.manual_seed((self.seed + self.steps * _GOLDEN) % 2**64)
        self.steps += 1
        return torch.rand(k, k, generator=generator, device=device).argsort(dim=1)

    def aggregate(self, jacobian: Tensor) -> Tensor:
        g = gram(jacobian)
        weights = pcgrad_coefficients(g, self.orders(jacobian.device)).sum(dim=0).to(jacobian.dtype)
        self.last_weights.copy_(weights)
        return weights @ jacobian

    def get_extra_state(self) -> dict[str, int]:
        return {"seed": self.seed, "steps": self.steps}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.seed, self.steps = int(state["seed"]), int(state["steps"])


@hookimpl
def register_weightings(register: Any) -> None:
    register("pcgrad", PCGrad, params=PCGradParams, description=PCGrad.description)
