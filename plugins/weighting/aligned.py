"""`aligned`: Aligned-MTL, independent component alignment (Senushkin et al., CVPR 2023, Algorithm 1).

Make the system of task gradients perfectly conditioned before combining it. With
M = G G^T = V diag(lambda) V^T (G = J, the (K, D) gradients), the balance transformation

    B = sqrt(lambda_min) V diag(1 / sqrt(lambda)) V^T        (over the positive eigenvalues)

turns G into B G, whose rows are orthogonal with equal norms sqrt(lambda_min) (condition
number 1). The update is the weighted sum of the aligned gradients, d = w' B G, with
task weights w = 1/K each (torchjd's AlignedMTL convention; the paper's preference
weights). The weights logged are B w. The authors' released code (and LibMTL) sum the
aligned gradients instead (w = 1 each), a step K times larger: multiply `train.lr` by K
to reproduce their runs with plain SGD (Adam-type optimizers are nearly scale-free).
Eigenvalues at or below lambda_max K eps (eps of the Jacobian's dtype) count as zero,
like torchjd; with none left, B = I and d is the plain mean. `scale_mode` picks the
eigenvalue that sets the scale: `min` (the paper's lambda_min, default), `median`, or
`rmse` (the mean eigenvalue, as in the authors' released code).

The eigendecomposition of the K x K matrix is `torch.linalg.eigh` (see
`_solvers.symmetric_eigh`: a non-finite Gram matrix gives NaN weights, which the
run's loss check reports, rather than an error inside the solver).

Default grad space: `features`. The paper's Aligned-MTL-UB applies the same alignment
to the gradients of the shared representation, an upper bound that costs one plain
step; `params` is the full method (K backward passes).
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
from hydranet.plugins.weighting._solvers import gram, rank_rtol, symmetric_eigh, take

ScaleMode = Literal["min", "median", "rmse"]


class AlignedParams(GradientParams):
    scale_mode: ScaleMode = Field("min", description="Eigenvalue that sets the aligned gradients' norm: min (paper), "
                                                    "median, or rmse (the mean, as in the authors' code).")


def balance_transformation(g: Tensor, rtol: float, scale_mode: ScaleMode = "min") -> Tensor:
    """B = sqrt(scale) V diag(1/sqrt(lambda)) V^T over the eigenvalues above rtol * lambda_max; I if none."""
    k = g.shape[0]
    values, vectors = symmetric_eigh(g)
    kept = values > values.amax() * rtol
    count = kept.sum()
    inf = torch.full_like(values, torch.inf)
    if scale_mode == "min":
        scale = torch.where(kept, values, inf).amin()
    elif scale_mode == "median":  # torch.median's convention: the lower middle value
        ordered = torch.where(kept, values, inf).sort().values
        scale = take(ordered, ((count - 1) // 2).clamp_min(0))
    else:
        scale = torch.where(kept, values, 0.0).sum() / count.clamp_min(1)
    inverse_sqrt = torch.where(kept, torch.where(kept, values, 1.0).rsqrt(), 0.0)
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    b = torch.where(count > 0, scale, 1.0).clamp_min(0).sqrt() * (vectors * inverse_sqrt) @ vectors.T
    return torch.where(count > 0, b, eye)


class AlignedMTL(GradientWeighting):
    """Aligns the task gradients into an orthogonal, equal-norm system, then sums them."""

    description = "Aligned-MTL: align the task gradients to condition number 1 (eigendecomposition), then average."
    reference = ("Senushkin, Patakin, Kuznetsov, Konushin. Independent Component Alignment for Multi-Task "
                 "Learning. CVPR 2023.")

    def __init__(self, tasks: Sequence[Task], params: AlignedParams | None = None):
        params = params or AlignedParams()
        super().__init__(tasks, params.grad_space)
        self.scale_mode: ScaleMode = params.scale_mode

    def aggregate(self, jacobian: Tensor) -> Tensor:
        g = gram(jacobian)
        k = g.shape[0]
        b = balance_transformation(g, rank_rtol(jacobian.dtype, k), self.scale_mode)
        weights = b.sum(dim=1).div(k).to(jacobian.dtype)  # B w with w = 1/K
        self.last_weights.copy_(weights)
        return weights @ jacobian


@hookimpl
def register_weightings(register: Any) -> None:
    register("aligned", AlignedMTL, params=AlignedParams, description=AlignedMTL.description,
             aliases=["aligned_mtl", "aligned-mtl", "alignedmtl"])  # LibMTL's Aligned_MTL, torchjd's AlignedMTL
