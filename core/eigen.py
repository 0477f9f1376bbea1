"""Eigendecomposition of the small symmetric matrices the gradient weightings solve on.

`torch.linalg.eigh` (LAPACK/cuSOLVER) on the K x K Gram matrix J J^T. It
reads its status back to the host, one sync per call; the alternative this
project used before, Jacobi rotations as plain tensor operations, needed no
sync but a few hundred small kernel launches, and measured 2.5x to 7x slower
on a CPU and 6x (K = 2) to 70x (K = 5) slower on an H200 (benchmarks/README.md).
The gradient weightings that call this do not run inside a recorded CUDA
graph (`Weighting.capturable` is off for them), so the sync is allowed there.

What `eigh` does not do on its own: a NaN makes it raise ("failed to
converge"), and it reads one triangle only, so an inf in the other would
pass unseen. A step whose gradients went non-finite must reach the run's
loss check, which names the task, not die inside a solver; so a non-finite
matrix gives NaN eigenpairs here, decided on the device without a branch.
`gram_root` in `core/weighting.py` needs this too, which is why it lives in
core; the weightings' kernels in `plugins/weighting/_solvers.py` build on it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def solver_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (the matrices are K x K: precision is free); MPS has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def symmetric_eigh(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of a small symmetric matrix; NaN if it is not finite.

    The matrix is symmetrised first ((A + A^T) / 2), so rounding that made J J^T
    slightly asymmetric does not depend on which triangle LAPACK reads.
    """
    a = (matrix + matrix.mT) / 2
    finite = torch.isfinite(a).all()
    # eigh raises on NaN: a non-finite matrix is swapped for zeros, which decompose, and NaN replaces the result.
    # Python scalars, not tensors made per call (an identity, a NaN): no allocation or fill kernel per step
    safe = torch.where(finite, a, 0.0)
    if a.device.type == "mps":  # no eigh kernel there; a K x K matrix costs nothing to move
        values, vectors = torch.linalg.eigh(safe.cpu())
        values, vectors = values.to(a.device), vectors.to(a.device)
    else:
        values, vectors = torch.linalg.eigh(safe)
    return torch.where(finite, values, torch.nan), torch.where(finite, vectors, torch.nan)


__all__ = ["solver_dtype", "symmetric_eigh"]
