"""Fixed-work eigendecomposition of small symmetric matrices, on the device.

`torch.linalg.eigh` reads its status back to the host, so a step that calls
it waits for the GPU. `symmetric_eigh` uses cyclic Jacobi rotations instead
(round-robin order, all disjoint rotations of a round applied as one matrix
product): tensor operations only, a number of sweeps fixed in advance, no
branch on a tensor's value. It lives in core because `core/weighting.py`
needs it (`gram_root`, for gradient weighting across processes); the
weightings' kernels in `plugins/weighting/_solvers.py` build on it.

Float64 where the device has it (the matrices are K x K), except on MPS.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor


def solver_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it; the K x K problems cost nothing either way."""
    return torch.float32 if device.type == "mps" else torch.float64


@lru_cache(maxsize=64)
def _round_robin(k: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Rounds of disjoint index pairs covering every pair once (the circle method)."""
    n = k + k % 2
    players = list(range(n))
    rounds = []
    for _ in range(n - 1):
        pairs = tuple((min(p, q), max(p, q)) for p, q in
                      ((players[i], players[n - 1 - i]) for i in range(n // 2)) if p < k and q < k)
        rounds.append(pairs)
        players = [players[0], players[-1], *players[1:-1]]
    return tuple(rounds)


_PLANS: dict[tuple[int, str, torch.dtype], tuple[Tensor, Tensor]] = {}


def _jacobi_plan(k: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Per round: the partner permutation matrix P (P[i, partner(i)] = 1) and the role (+1 p, -1 q, 0 idle).

    Built once per (K, device) and cached, so later calls copy nothing to the device.
    """
    key = (k, str(device), dtype)
    if key not in _PLANS:
        rounds = _round_robin(k)
        partner = torch.zeros(len(rounds), k, k, dtype=dtype)
        role = torch.zeros(len(rounds), k, dtype=dtype)
        for r, pairs in enumerate(rounds):
            partner[r] = torch.eye(k, dtype=dtype)
            for p, q in pairs:
                partner[r, p, p] = partner[r, q, q] = 0.0
                partner[r, p, q] = partner[r, q, p] = 1.0
                role[r, p], role[r, q] = 1.0, -1.0
        _PLANS[key] = (partner.to(device), role.to(device))
    return _PLANS[key]


def default_sweeps(k: int) -> int:
    """Jacobi sweeps that reach float64 rounding on K x K Gram matrices (measured: K=16 needs 8)."""
    return 5 + math.ceil(math.log2(max(k, 2)))


def symmetric_eigh(matrix: Tensor, sweeps: int | None = None) -> tuple[Tensor, Tensor]:
    """Eigenvalues (unsorted) and eigenvectors (columns) of a small symmetric matrix, by Jacobi rotations.

    Each rotation on (p, q) uses theta = atan2(2 a_pq, a_qq - a_pp) / 2, which zeroes a_pq;
    a round applies K/2 disjoint rotations at once as A <- R^T A R. Jacobi converges
    quadratically; `default_sweeps(K)` sweeps reach float64 rounding.
    """
    k = matrix.shape[-1]
    sweeps = default_sweeps(k) if sweeps is None else sweeps
    vectors = torch.eye(k, dtype=matrix.dtype, device=matrix.device)
    a = (matrix + matrix.T) / 2
    if k == 1:
        return a.diagonal().clone(), vectors
    partner, role = _jacobi_plan(k, matrix.device, matrix.dtype)
    for _ in range(sweeps):
        for r in range(partner.shape[0]):
            p_matrix, rho = partner[r], role[r]
            diagonal = a.diagonal()
            other = p_matrix @ diagonal  # a[partner(i), partner(i)]
            coupling = (a * p_matrix).sum(dim=1) * rho.abs()  # a[i, partner(i)], 0 for an idle index
            theta = 0.5 * torch.atan2(2 * coupling, rho * (other - diagonal))
            rotation = torch.diag(torch.cos(theta)) + (torch.sin(theta) * rho)[:, None] * p_matrix
            a = rotation.T @ a @ rotation
            vectors = vectors @ rotation
    return a.diagonal().clone(), vectors


__all__ = ["solver_dtype", "default_sweeps", "symmetric_eigh"]
