"""Small numerical kernels shared by the gradient-based weightings.

Every weighting reduces the (K, D) Jacobian to its K x K Gram matrix and solves
a tiny problem on it. Library solvers would do that on the host (cvxpy,
quadprog, scipy), so each step would copy to the host and wait. These kernels
stay on the device:

- `symmetric_eigh` (from `core/eigen.py`, which `core/weighting.py` uses
  too): `torch.linalg.eigh`, its one status check measured cheaper than a
  sync-free solver's many small launches, with NaN out for non-finite input;
- `psd_pinv`: the pseudo-inverse of a Gram matrix from that decomposition;
- `min_norm_simplex`: min a'Ga over the simplex (MGDA's min-norm point), exactly
  by enumerating the 2^K - 1 supports for K <= MAX_EXACT_TASKS, by Frank-Wolfe above;
- `frank_wolfe_min_norm`: Algorithm 2 of Sener and Koltun (2018), with the
  paper's stop rule kept as a mask rather than a `break`, so that the loop
  never reads a value back to the host;
- `simplex_kkt`: the KKT systems of a quadratic over the simplex restricted to
  each support, in one batched solve (used by `min_norm_simplex` and CAGrad);
- `box_qp`: min v'Gv subject to v >= u (UPGrad's projection, in its dual), exactly
  by enumerating the 2^K active sets in one batched solve, or by accelerated
  projected gradient for many tasks;
- `project_simplex`, `support_masks`, `take`: building blocks.

The enumeration trick (used by `box_qp`, `min_norm_simplex` and CAGrad): for each candidate
active set, solve the equality-constrained problem (one batched `solve_ex`),
move the candidate onto the feasible set, evaluate the true objective and keep
the best. Every candidate is then a feasible point, so none can score below
the optimum, and the candidate of the optimal active set *is* the optimum: the
result is exact however badly the other (possibly singular) systems behave.

Solvers run in float64 (the Gram matrix is tiny), except on MPS, which has none.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# the eigendecomposition lives in core, which needs it too (gram_root); re-exported here for the weightings
from hydranet.core.eigen import solver_dtype, symmetric_eigh

#: Above this many tasks the 2^K active-set enumeration gives way to iterative solvers (256 subsets:
#: one batched solve, a few milliseconds even on a CPU; 4096 at K = 12 would cost tenths of a second per CPU step).
MAX_EXACT_TASKS = 8


def take(rows: Tensor, index: Tensor) -> Tensor:
    """rows[index] for a 0-d index tensor, on the device (plain indexing would read the index back to the host)."""
    return rows.index_select(0, index.reshape(1)).squeeze(0)


def gram(jacobian: Tensor) -> Tensor:
    """G = J J^T, in the Jacobian's dtype (float32 from the engine), then in the solver dtype."""
    return (jacobian @ jacobian.T).to(solver_dtype(jacobian.device))


def rank_rtol(dtype: torch.dtype, k: int) -> float:
    """Relative size below which an eigenvalue of a Gram computed in `dtype` is rounding noise."""
    return k * torch.finfo(dtype).eps


def psd_pinv(g: Tensor, rtol: float) -> Tensor:
    """Moore-Penrose pseudo-inverse of a symmetric PSD matrix; eigenvalues <= rtol * max |lambda| count as 0.

    The same cut as `torch.linalg.pinv(g, rtol=rtol)` (whose default rtol is K * eps of
    the dtype); a non-finite `g` gives NaN (see `symmetric_eigh`) rather than an error.
    """
    values, vectors = symmetric_eigh(g)
    keep = values.abs() > rtol * values.abs().amax()
    inverse = torch.where(keep, 1.0 / torch.where(keep, values, torch.ones_like(values)), torch.zeros_like(values))
    return (vectors * inverse) @ vectors.T


# ---------------------------------------------------------------- simplex problems


def simplex_kkt(g: Tensor, support: Tensor, rhs: Tensor) -> Tensor:
    """Solve, for each support S (a row of the (S, K) bool `support`) and each column r of `rhs` (K + 1, C),

        G_S. u - mu 1_S = r_S  (rows in S),   u_i = 0  (rows off S),   1_S' u = r_K  (last row)

    in one batched `solve_ex`; returns u, (S, K, C), unchecked (a singular system gives inf/NaN or
    garbage: callers make every candidate feasible and score it, see the module doc). With r = (0, 1)
    u is the min-norm point of the affine hull of the gradients in S; the system is regular whenever
    those gradients are affinely independent.
    """
    k = g.shape[0]
    s = support.shape[0]
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    kkt = torch.zeros(s, k + 1, k + 1, dtype=g.dtype, device=g.device)
    kkt[:, :k, :k] = torch.where(support[:, :, None] & support[:, None, :], g, eye)
    kkt[:, :k, k] = torch.where(support, -1.0, zero)
    kkt[:, k, :k] = torch.where(support, 1.0, zero)
    right = torch.cat((torch.where(support[:, :, None], rhs[None, :k, :], zero),
                       rhs[None, k:, :].expand(s, 1, -1)), dim=1)  # (S, K + 1, C)
    return torch.linalg.solve_ex(kkt, right, check_errors=False).result[:, :k, :]


def onto_simplex_by_scaling(candidates: Tensor) -> Tensor:
    """Rows clipped at 0 and divided by their sum (an all-zero or non-finite row becomes the uniform point)."""
    k = candidates.shape[-1]
    candidates = torch.where(torch.isfinite(candidates), candidates, 0.0).clamp_min(0)
    total = candidates.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, candidates / torch.where(total > 0, total, 1.0), 1.0 / k)


def min_norm_simplex(g: Tensor, max_iters: int = 100, epsilon: float = 1e-3) -> Tensor:
    """argmin over the simplex of a'Ga: MGDA's min-norm point of the gradients' convex hull.

    Exact for K <= MAX_EXACT_TASKS: each of the 2^K - 1 supports S gives the min-norm point of the
    affine hull of its gradients (`simplex_kkt` with r = (0, 1)); each candidate is moved onto the
    simplex (clipped, renormalised), scored by a'Ga, and the best kept (see the module doc: the
    optimum's support, which can be chosen affinely independent, yields the optimum itself). All on
    the device, no host sync. More tasks: `frank_wolfe_min_norm(g, max_iters, epsilon)`.
    """
    k = g.shape[0]
    if k > MAX_EXACT_TASKS:
        return frank_wolfe_min_norm(g, max_iters, epsilon)
    support = support_masks(k, g.device)
    rhs = torch.zeros(k + 1, 1, dtype=g.dtype, device=g.device)
    rhs[k] = 1.0
    solutions = simplex_kkt(g, support, rhs)[..., 0]  # (S, K)
    usable = torch.isfinite(solutions).all(dim=1)
    candidates = onto_simplex_by_scaling(solutions)
    objective = torch.einsum("sk,kl,sl->s", candidates, g, candidates)
    objective = torch.where(usable & torch.isfinite(objective), objective, torch.inf)
    return take(candidates, objective.argmin())


def frank_wolfe_min_norm(g: Tensor, max_iters: int = 100, epsilon: float = 1e-3) -> Tensor:
    """argmin over the simplex of a' G a, approximately, by Frank-Wolfe with exact line search
    (Sener and Koltun, Alg. 2, as torchjd's MGDA).

    Starts at the uniform point; each step moves towards the vertex e_t, t = argmin (G a)_t,
    by gamma = clip((b - a_t)/(b + c - 2 a_t), 0, 1) with a_t = (G a)_t, b = a'Ga, c = G_tt.
    The paper stops once gamma < epsilon; here that is a mask that freezes the iterate,
    so the result is the paper's (and torchjd's) while the loop length stays fixed.
    Exact for two tasks (one line search from the uniform point reaches the optimum of the
    segment); for K >= 3 Frank-Wolfe converges as O(1/t) and the default 100 iterations with
    epsilon 1e-3 can stop well short of the min-norm point (directions off by over 10%):
    `min_norm_simplex` solves it exactly for up to MAX_EXACT_TASKS tasks.
    """
    k = g.shape[0]
    alpha = torch.full((k,), 1.0 / k, dtype=g.dtype, device=g.device)
    running = torch.ones((), dtype=torch.bool, device=g.device)
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    for _ in range(max_iters):
        g_alpha = g @ alpha
        vertex = take(eye, torch.argmin(g_alpha))
        a = alpha @ (g @ vertex)
        b = alpha @ g_alpha
        c = vertex @ (g @ vertex)
        interior = (b - a) / (b + c - 2 * a)
        gamma = torch.where(c <= a, 1.0, torch.where(b <= a, 0.0, interior))
        gamma = torch.where(running, gamma, 0.0)
        alpha = (1 - gamma) * alpha + gamma * vertex
        running = running & (gamma >= epsilon)
    return alpha


def project_simplex(x: Tensor) -> Tensor:
    """Euclidean projection of each row of `x` onto the probability simplex (sort-based, no branches)."""
    k = x.shape[-1]
    ordered = torch.sort(x, dim=-1, descending=True).values
    cumulative = ordered.cumsum(dim=-1) - 1
    index = torch.arange(1, k + 1, dtype=x.dtype, device=x.device)
    count = ((ordered - cumulative / index) > 0).to(x.dtype).mul(index).amax(dim=-1, keepdim=True).clamp_min(1)
    theta = cumulative.gather(-1, count.long() - 1) / count
    return (x - theta).clamp_min(0)


def support_masks(k: int, device: torch.device, include_empty: bool = False) -> Tensor:
    """(S, K) bool: every subset of the K indices (S = 2^K, or 2^K - 1 without the empty set)."""
    codes = torch.arange(0 if include_empty else 1, 2 ** k, device=device)
    return ((codes[:, None] >> torch.arange(k, device=device)) & 1).bool()


# ---------------------------------------------------------------- UPGrad's projection


def box_qp(g: Tensor, lower: Tensor, iterations: int = 500) -> Tensor:
    """For each row u of `lower` (B, K): argmin_v v'Gv subject to v >= u, with G positive definite.

    Exact for K <= MAX_EXACT_TASKS: for each set F of free coordinates, v_F solves
    G_FF v_F = -G_F,notF u_notF (the others sit on their bound); each candidate is
    clipped up to the bound, scored by v'Gv, and the best kept (see the module doc).
    More tasks: accelerated projected gradient (FISTA) from v = u, `iterations` steps.
    """
    k = g.shape[0]
    if k > MAX_EXACT_TASKS:
        return _box_qp_iterative(g, lower, iterations)
    free = support_masks(k, g.device, include_empty=True)  # (S, K)
    # Free rows i: sum_j G_ij v_j = 0 over all j (bound coordinates enter through their identity rows).
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    rhs = torch.where(free[:, :, None], zero, lower.T[None, :, :])  # (S, K, B): one factorisation per subset
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    systems = torch.where(free[:, :, None], g, eye)  # (S, K, K): G's row where free, identity row where bound
    solutions = torch.linalg.solve_ex(systems, rhs, check_errors=False).result.permute(2, 0, 1)  # (B, S, K)
    solutions = torch.where(torch.isfinite(solutions), solutions, lower[:, None, :])
    candidates = torch.maximum(solutions, lower[:, None, :])  # (B, S, K), all feasible
    objective = torch.einsum("bsk,kl,bsl->bs", candidates, g, candidates)
    best = objective.argmin(dim=1)
    return candidates.gather(1, best[:, None, None].expand(-1, 1, k)).squeeze(1)


def _box_qp_iterative(g: Tensor, lower: Tensor, iterations: int) -> Tensor:
    lipschitz = 2 * g.diagonal().sum().clamp_min(torch.finfo(g.dtype).tiny)  # >= 2 lambda_max
    v = lower.clone()
    y = v
    t = 1.0
    for _ in range(iterations):
        v_next = torch.maximum(y - (2 * y @ g) / lipschitz, lower)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = v_next + ((t - 1) / t_next) * (v_next - v)
        v, t = v_next, t_next
    return v


__all__ = ["MAX_EXACT_TASKS", "take", "solver_dtype", "gram", "rank_rtol", "symmetric_eigh",
           "psd_pinv", "simplex_kkt", "onto_simplex_by_scaling", "min_norm_simplex", "frank_wolfe_min_norm",
           "project_simplex", "support_masks", "box_qp"]
