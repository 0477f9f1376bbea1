"""`imtl`: IMTL-G, the gradient half of Impartial Multi-Task Learning (Liu et al., ICLR 2021).

Choose the combination d = sum_i alpha_i g_i, sum_i alpha_i = 1, whose projections onto
every task's unit gradient u_i = g_i / ||g_i|| are equal (d . u_i = d . u_j): no task is
favoured. The paper's closed form, with D = [g_1 - g_i]_{i=2..K} and U = [u_1 - u_i]_{i=2..K}
(rows), is

    alpha_{2..K} = g_1 U^T (D U^T)^{-1},     alpha_1 = 1 - sum_{i>=2} alpha_i.

Equivalently (and how it is computed here, as in torchjd's IMTLG): d . u_i = (G alpha)_i /
||g_i|| equal for all i means G alpha = kappa n with n_i = ||g_i||, so

    alpha = G^+ n / (1' G^+ n)

with the pseudo-inverse of the Gram matrix from an on-device eigendecomposition
(eigenvalues below K eps |lambda|_max, eps of the Jacobian's dtype, count as zero, like
`torch.linalg.pinv`). That is the paper's formula when the gradients are linearly
independent and stays defined when they are not (identical or dependent gradients),
where (D U^T)^{-1} does not exist. If 1' G^+ n vanishes the weights are zero. The
method has no hyper-parameter.

Default grad space: `features`. The paper's Algorithm 1 takes the gradients of the shared
feature z ("compute gradient of shared feature"), so this is the method as published,
at about the cost of one plain step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Task
from hydranet.core.weighting import GradientParams, GradientWeighting
from hydranet.plugins.weighting._solvers import gram, psd_pinv, rank_rtol


class IMTLParams(GradientParams):
    """IMTL-G has no hyper-parameter; only the gradient space is chosen."""


def imtl_weights(g: Tensor, rtol: float) -> Tensor:
    """alpha = G^+ n / 1'G^+ n for the Gram matrix `g` (n: the gradient norms); zeros when 1'G^+ n is 0."""
    norms = g.diagonal().clamp_min(0).sqrt()
    v = psd_pinv(g, rtol) @ norms
    total = v.sum()
    usable = total.abs() > rtol * v.abs().sum()
    return torch.where(usable, v / torch.where(usable, total, 1.0), 0.0)


class IMTLG(GradientWeighting):
    """The combination of the task gradients with equal projections onto every task's direction."""

    description = "IMTL-G: the combination (weights sum to 1) with equal projections onto every task gradient."
    reference = "Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. Towards Impartial Multi-task Learning. ICLR 2021."

    def __init__(self, tasks: Sequence[Task], params: IMTLParams | None = None):
        params = params or IMTLParams()
        super().__init__(tasks, params.grad_space)

    def aggregate(self, jacobian: Tensor) -> Tensor:
        g = gram(jacobian)
        weights = imtl_weights(g, rank_rtol(jacobian.dtype, g.shape[0])).to(jacobian.dtype)
        self.last_weights.copy_(weights)
        return weights @ jacobian


@hookimpl
def register_weightings(register: Any) -> None:
    register("imtl", IMTLG, params=IMTLParams, description=IMTLG.description,
             aliases=["imtl_g", "imtl-g", "imtlg"])  # IMTL-G, torchjd's IMTLG
