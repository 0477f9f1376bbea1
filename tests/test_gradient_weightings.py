"""The seven gradient-based weightings against hand-derived values, torchjd, and the engine's contract.

Hand cases: every expected number is worked out from the paper's formula in the comment
next to it (2-D gradients, so the arithmetic can be checked on paper); the code under
test never produces an expectation.

torchjd comparisons (torchjd 0.18, the test extra): `mgda`, `pcgrad`, `imtl`, `aligned` and
`upgrad` against `MGDA`, `PCGrad`, `IMTLG`, `AlignedMTL` and `UPGrad` on random float32
Jacobians (K = 2..5, D = 10..48, several seeds, some with strongly conflicting rows): the
combined gradients agree to 1e-4 relative (in norm). torchjd's `MGDA` is Frank-Wolfe, exact only
for two tasks: `mgda`'s default exact solver is compared with it at K = 2, `solver: frank_wolfe`
at every K, and the exact solver against a brute-force grid and the KKT conditions for
K = 3..8. torchjd's `UPGrad` projects with
quadprog through qpsolvers, which are not installed here, so it is given an exact
projector written below (brute-force active sets and KKT checks, with the same trace
normalisation and 1e-4 ridge as torchjd's `QuadprogProjector`); torchjd still does the
rest (preference vector, combination). torchjd's `CAGrad` needs cvxpy and clarabel and its
`NashMTL` needs cvxpy and ecos, none installed: `cagrad` is checked against a dense grid
search of its dual instead, and `nashmtl` against its optimality condition and an independent Newton
solve of it.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from conftest import make_tasks, tiny_model_and_batch
from hydranet.core.forward import task_losses
from hydranet.core.errors import SpecError
from hydranet.core.interfaces import StepContext
from hydranet.core.plugins import Components, load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.core.weighting import GradientParams, GradientWeighting
from hydranet.plugins.weighting import _solvers
from hydranet.plugins.weighting.cagrad import cagrad_dual
from hydranet.plugins.weighting.nashmtl import nash_solve
from hydranet.plugins.weighting.pcgrad import pcgrad_coefficients

STRATEGIES = ("pcgrad", "mgda", "cagrad", "imtl", "nashmtl", "aligned", "upgrad")
DEFAULT_SPACE = {"pcgrad": "params", "mgda": "features", "cagrad": "params", "imtl": "features",
                 "nashmtl": "params", "aligned": "features", "upgrad": "params"}
SQRT2 = math.sqrt(2.0)


@pytest.fixture(scope="module")
def components() -> Components:
    return load_components(make_plugin_manager(entry_points=False))


def make(components: Components, name: str, k: int = 2, **params) -> GradientWeighting:
    names = ("age", "gender", "ethnicity")[:k] if k <= 3 else tuple(f"t{i}" for i in range(k))
    if k <= 3:
        tasks = make_tasks(components, *names)
    else:
        entry = components.tasks.get("regression")
        tasks = [entry.factory(n, entry.validate_params({"label": n})) for n in names]
    entry = components.weightings.get(name)
    return entry.factory(tasks, entry.validate_params(params))


def J(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def close(got: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), atol=atol, rtol=1e-5)


def random_jacobian(seed: int, k: int, d: int, conflict: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    jacobian = torch.randn(k, d, generator=generator) * torch.rand(k, 1, generator=generator).add(0.2) * 3
    if conflict:  # a second task pulling mostly against the first
        jacobian[1] = -0.8 * jacobian[0] + 0.3 * jacobian[1]
    return jacobian


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).norm() / theirs.norm().clamp_min(1e-12)).item()


# ---------------------------------------------------------------- registration and parameters


def test_every_strategy_combines_gradients_in_its_default_space(components):
    """(Registration, description and reference: test_weighting_suite, for every built-in.)"""
    assert components.pm.load_errors() == []
    for name in STRATEGIES:
        entry = components.weightings.get(name)
        cls = entry.factory
        assert issubclass(cls, GradientWeighting) and cls.needs_features
        assert "20" in cls.reference  # each cites its paper, with the year
        assert cls.default_grad_space == DEFAULT_SPACE[name]
        assert "Default grad space" in __import__(cls.__module__, fromlist=["_"]).__doc__
        assert issubclass(entry.params, GradientParams)
        for field_name, field in entry.params.model_fields.items():
            assert field.description, f"{name}.{field_name} has no description"


@pytest.mark.parametrize("name", STRATEGIES)
def test_grad_space_default_and_override(components, name):
    assert make(components, name).grad_space == DEFAULT_SPACE[name]
    for space in ("features", "params"):
        assert make(components, name, grad_space=space).grad_space == space


def spec(weighting: dict) -> dict:
    return {"tasks": ["age", "gender"], "data": {"name": "utkface", "root": "x"}, "backbone": "tiny",
            "weighting": weighting}


@pytest.mark.parametrize("name", STRATEGIES)
def test_spec_accepts_grad_space_and_rejects_a_bad_one(components, name):
    for space in ("features", "params"):
        resolved = load_spec(spec({"name": name, "grad_space": space}), components=components)
        assert resolved.build_weighting(resolved.build_tasks()).grad_space == space
    with pytest.raises(SpecError) as info:
        load_spec(spec({"name": name, "grad_space": "weights"}), components=components)
    assert [path for path, _ in info.value.problems] == ["weighting.grad_space"]


@pytest.mark.parametrize(("weighting", "path"), [
    ({"name": "mgda", "normalization": "loss"}, "weighting.normalization"),  # needs the losses: not offered
    ({"name": "mgda", "max_iters": 0}, "weighting.max_iters"),
    ({"name": "cagrad", "c": -0.1}, "weighting.c"),
    ({"name": "nashmtl", "update_weights_every": 0}, "weighting.update_weights_every"),
    ({"name": "nashmtl", "max_norm": -1}, "weighting.max_norm"),
    ({"name": "aligned", "scale_mode": "max"}, "weighting.scale_mode"),
    ({"name": "upgrad", "reg_eps": -1e-4}, "weighting.reg_eps"),
    ({"name": "pcgrad", "seed": -1}, "weighting.seed"),
    ({"name": "imtl", "c": 0.4}, "weighting.c"),  # IMTL-G has no hyper-parameter
])
def test_spec_reports_bad_strategy_params(components, weighting, path):
    with pytest.raises(SpecError) as info:
        load_spec(spec(weighting), components=components)
    assert [p for p, _ in info.value.problems] == [path]


# ---------------------------------------------------------------- pcgrad (Yu et al. 2020, Algorithm 1)
# g_i^PC <- g_i^PC - (g_i^PC . g_j / ||g_j||^2) g_j whenever g_i^PC . g_j < 0; update = sum_i g_i^PC.


def test_pcgrad_hand_cases(components):
    w = make(components, "pcgrad")
    # orthogonal: no conflict, the plain sum (1,0) + (0,1)
    close(w.aggregate(J([1, 0], [0, 1])), [1.0, 1.0])
    close(w.weights(), [1.0, 1.0])
    # identical: no conflict, 2 g
    close(w.aggregate(J([1, 2], [1, 2])), [2.0, 4.0])
    # conflicting g1 = (1,0), g2 = (-1,1), g1.g2 = -1:
    #   g1^PC = (1,0) - (-1/2)(-1,1) = (0.5, 0.5);  g2^PC = (-1,1) - (-1/1)(1,0) = (0, 1);  sum (0.5, 1.5)
    #   as weights: g1^PC = g1 + 0.5 g2, g2^PC = g1 + g2  ->  (2, 1.5)
    close(w.aggregate(J([1, 0], [-1, 1])), [0.5, 1.5])
    close(w.weights(), [2.0, 1.5])


def test_pcgrad_three_tasks_and_the_order(components):
    # g1 = (2,0), g2 = (0,1), g3 = (-1,-1): g1.g2 = 0, g1.g3 = -2, g2.g3 = -1; |g1|^2 = 4, |g2|^2 = 1, |g3|^2 = 2
    jacobian = J([2, 0], [0, 1], [-1, -1])
    g = jacobian.double() @ jacobian.double().T
    ascending = torch.tensor([[0, 1, 2]] * 3)
    # row 1 visits g2 (no conflict) then g3: (2,0) - (-2/2)(-1,-1) = (1,-1)
    # row 2 visits g1 (0) then g3: (0,1) - (-1/2)(-1,-1) = (-0.5, 0.5)
    # row 3 visits g1: (-1,-1) - (-2/4)(2,0) = (0,-1); then g2: (0,-1).(0,1) = -1 -> (0,-1) + (0,1) = (0,0)
    # sum: (0.5, -0.5)
    close(pcgrad_coefficients(g, ascending).sum(0).float() @ jacobian, [0.5, -0.5])
    # row 1 visiting g3 first: (1,-1); then g2: (1,-1).(0,1) = -1 -> (1,-1) + (0,1) = (1,0); sum (0.5, 0.5)
    reordered = torch.tensor([[2, 1, 0], [0, 1, 2], [0, 1, 2]])
    close(pcgrad_coefficients(g, reordered).sum(0).float() @ jacobian, [0.5, 0.5])


def test_pcgrad_order_is_random_seeded_and_resumable(components):
    torch.manual_seed(5)
    first = make(components, "pcgrad", k=4)
    torch.manual_seed(5)
    second = make(components, "pcgrad", k=4)
    assert first.seed == second.seed  # drawn from the global generator: the training seed fixes it
    orders = [first.orders(torch.device("cpu")) for _ in range(12)]
    assert all(sorted(o.tolist()[0]) == [0, 1, 2, 3] for o in orders)
    assert len({tuple(o.flatten().tolist()) for o in orders}) > 1  # the order changes from step to step
    assert torch.equal(second.orders(torch.device("cpu")), orders[0])
    # a checkpoint (weights_only load) restores seed and step: the next orders are the ones to come
    import io
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    restored = make(components, "pcgrad", k=4, seed=123)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.orders(torch.device("cpu")), first.orders(torch.device("cpu")))
    assert make(components, "pcgrad", k=4, seed=7).seed == 7


# ---------------------------------------------------------------- mgda (Sener and Koltun 2018)
# min_{alpha in simplex} ||sum alpha_i g_i||^2; for two tasks alpha_1 = clip((g2-g1).g2 / ||g1-g2||^2, 0, 1).


def test_mgda_hand_cases(components):
    w = make(components, "mgda")
    # orthogonal (1,0), (0,2): a^2 + 4(1-a)^2 is least at a = 4/5 -> d = (0.8, 0.4)
    close(w.aggregate(J([1, 0], [0, 2])), [0.8, 0.4])
    close(w.weights(), [0.8, 0.2])
    # conflicting (1,0), (-1,1): (2a-1)^2 + (1-a)^2, derivative 10a - 6 = 0 -> a = 0.6 -> d = (0.2, 0.4);
    # then d.g1 = d.g2 = |d|^2 = 0.2: both tasks improve equally
    close(w.aggregate(J([1, 0], [-1, 1])), [0.2, 0.4])
    close(w.weights(), [0.6, 0.4])
    # one gradient inside the other's half-line: (1,0), (2,0) -> the shorter one, d = (1,0)
    close(w.aggregate(J([1, 0], [2, 0])), [1.0, 0.0])
    # identical: every alpha gives g itself
    close(w.aggregate(J([1, 2], [1, 2])), [1.0, 2.0])
    assert w.weights().sum().item() == pytest.approx(1.0)
    # l2 normalisation: alpha from the unit gradients (1,0), (0,1) is (1/2, 1/2), applied to the raw ones
    close(make(components, "mgda", normalization="l2").aggregate(J([1, 0], [0, 2])), [0.5, 1.0])


def test_mgda_frank_wolfe_iterates_by_hand(components):
    # g = (1,0), (0,1), (1,1): G = [[1,0,1],[0,1,1],[1,1,2]], start alpha = (1/3,1/3,1/3)
    jacobian = J([1, 0], [0, 1], [1, 1])
    # step 1: G alpha = (2/3, 2/3, 4/3) -> t = 1st; a = 2/3, b = alpha.G alpha = 8/9, c = G_11 = 1
    #   gamma = (b - a)/(b + c - 2a) = (2/9)/(5/9) = 0.4 -> alpha = 0.6 alpha + 0.4 e1 = (0.6, 0.2, 0.2)
    one = make(components, "mgda", k=3, solver="frank_wolfe", max_iters=1)
    one.aggregate(jacobian)
    close(one.weights(), [0.6, 0.2, 0.2])
    # step 2: G alpha = (0.8, 0.4, 1.2) -> t = 2nd; a = 0.4, b = 0.48+0.08+0.24 = 0.8, c = 1
    #   gamma = 0.4/1.0 = 0.4 -> alpha = 0.6 (0.6,0.2,0.2) + 0.4 e2 = (0.36, 0.52, 0.12)
    two = make(components, "mgda", k=3, solver="frank_wolfe", max_iters=2)
    two.aggregate(jacobian)
    close(two.weights(), [0.36, 0.52, 0.12])
    # converged: the min-norm point of the hull is the midpoint of (1,0)-(0,1), (0.5, 0.5)
    many = make(components, "mgda", k=3, solver="frank_wolfe", max_iters=3000, epsilon=1e-9)
    close(many.aggregate(jacobian), [0.5, 0.5], atol=2e-3)  # Frank-Wolfe converges as O(1/t) here
    # the default exact solver: support {1, 2}, alpha = (1/2, 1/2, 0), at once
    exact = make(components, "mgda", k=3)
    close(exact.aggregate(jacobian), [0.5, 0.5])
    close(exact.weights(), [0.5, 0.5, 0.0])
    # with the defaults (100 iterations, epsilon 1e-3) Frank-Wolfe stops short: iterates zigzag between the
    # vertices e1 and e2 with steps that shrink like 1/t, and the third weight decays only as O(1/t)
    default_fw = make(components, "mgda", k=3, solver="frank_wolfe")
    assert (default_fw.aggregate(jacobian) - torch.tensor([0.5, 0.5])).norm() > 1e-3


def min_norm_by_grid(g: torch.Tensor, steps: int = 600) -> torch.Tensor:
    """The K = 3 min-norm weights, by brute force over the simplex grid a = (i, j, n - i - j)/n."""
    i, j = torch.meshgrid(torch.arange(steps + 1), torch.arange(steps + 1), indexing="ij")
    keep = (i + j) <= steps
    a = torch.stack((i[keep], j[keep], steps - i[keep] - j[keep]), dim=1).double() / steps
    return a[((a @ g) * a).sum(dim=1).argmin()]


def test_mgda_is_the_exact_min_norm_point(components):
    # K = 3: against a brute-force grid search of min ||sum a_i g_i||^2 (grid spacing 1/600; the grid point
    # nearest the optimum is within ~1e-3 of it in alpha, so the norms agree to second order);
    # K = 3..8: the KKT conditions of the min-norm point d = J'a over the simplex: g_i . d >= ||d||^2 for
    # every i, with equality where a_i > 0 (that is, (G a)_i >= a'Ga, the multiplier of a_i >= 0)
    for seed in range(12):
        k = 3 + seed % 6
        jacobian = random_jacobian(seed, k, 10 + 3 * seed, conflict=seed % 2 == 0)
        w = make(components, "mgda", k=k)
        d = w.aggregate(jacobian).double()
        alpha = w.weights().double()
        jd = jacobian.double()
        assert (alpha >= 0).all() and alpha.sum().item() == pytest.approx(1.0, abs=1e-6)
        dots, squared = jd @ d, d @ d
        scale = (jd.norm(dim=1) ** 2).max()
        assert (dots >= squared - 1e-5 * scale).all()
        assert torch.allclose(dots[alpha > 1e-6], squared.expand(int((alpha > 1e-6).sum())), atol=1e-5 * scale)
        if k == 3:
            g = jd @ jd.T
            grid = min_norm_by_grid(g)
            best = grid @ g @ grid
            assert squared <= best + 1e-6 * scale  # never worse than the best grid point
            assert squared >= best - 1e-2 * best.sqrt() * scale.sqrt() - 1e-9  # and close to it
            assert (alpha - grid).abs().max() < 5e-3 or squared.sqrt() < 1e-3 * scale.sqrt()


def test_mgda_fully_conflicting_tasks_give_zero(components):
    # (1,0) + (0,1) + (-1,-1) = 0: 0 is in the hull, a Pareto-stationary point; G alpha = 0 at the start -> stays
    close(make(components, "mgda", k=3).aggregate(J([1, 0], [0, 1], [-1, -1])), [0.0, 0.0])


# ---------------------------------------------------------------- cagrad (Liu et al. 2021)
# w* = argmin_w g_w.g0 + rho ||g_w||, rho = c ||g0||; d = (g0 + rho/||g_w*|| g_w*) / (1 + c^2) (rescale).


def test_cagrad_hand_cases(components):
    w = make(components, "cagrad")  # c = 0.4, rescale
    # orthogonal unit (1,0), (0,1): g_w.g0 = 1/2 for every w, ||g_w|| least at w = (1/2,1/2), g_w = g0;
    #   d = (1 + c) g0 / (1 + c^2) = 1.4/1.16 (0.5, 0.5) = (0.60344828, 0.60344828)
    close(w.aggregate(J([1, 0], [0, 1])), [0.60344828, 0.60344828])
    close(w.weights(), [0.60344828, 0.60344828])
    # (1,0), (0,2), w = (1-t, t): F(t) = 0.5 + 1.5 t + rho sqrt(1 - 2t + 5t^2), rho = 0.4 sqrt(1.25) = 0.4472136;
    #   F'(t) >= 1.5 - rho > 0 on [0,1], so t = 0, g_w = g1:  d = ((0.5 + rho, 1) / 1.16 = (0.81656344, 0.86206897)
    close(w.aggregate(J([1, 0], [0, 2])), [0.81656344, 0.86206897])
    # identical g: g_w = g0 = g, d = (1 + c) g / (1 + c^2) = 1.20689655 (1, 2)
    close(w.aggregate(J([1, 2], [1, 2])), [1.20689655, 2.41379310])
    # c = 0: the average gradient, even for conflicting tasks: ((1,0) + (-1,1))/2
    close(make(components, "cagrad", c=0.0).aggregate(J([1, 0], [-1, 1])), [0.0, 0.5])


def test_cagrad_interior_solution_by_hand(components):
    # (1,0), (0,2), c = 2: rho = 2 sqrt(1.25) = sqrt(5). F'(t) = 1.5 + sqrt5 (5t-1)/sqrt(5t^2-2t+1) = 0
    #   -> (5t-1)^2 = 0.45 (5t^2 - 2t + 1), 5t < 1 -> 22.75 t^2 - 9.1 t + 0.55 = 0 -> t = 0.07420582
    #   g_w = (1-t, 2t), lambda = rho/||g_w|| = 2.38484800, d = g0 + lambda g_w = (2.70787840, 1.35393920)
    #   weights 0.5 + lambda (1-t, t) = (2.70787840, 0.67696960); g1.d = g2.d = 2.7078784 (the worst task is lifted)
    w = make(components, "cagrad", c=2.0, rescale=False)
    close(w.aggregate(J([1, 0], [0, 2])), [2.70787840, 1.35393920], atol=2e-6)
    close(w.weights(), [2.70787840, 0.67696960], atol=2e-6)
    # rescale divides by 1 + c^2 = 5
    close(make(components, "cagrad", c=2.0).aggregate(J([1, 0], [0, 2])), [0.54157568, 0.27078784])


def test_cagrad_dual_matches_a_grid_search():
    def objective(g, w, rho):
        return w @ g.mean(dim=1) + rho * ((w @ g) * w).sum(-1).clamp_min(0).sqrt()

    grid = torch.linspace(0, 1, 401, dtype=torch.float64)
    simplex3 = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    simplex3 = simplex3[simplex3.sum(1) <= 1]
    simplex3 = torch.cat((simplex3, 1 - simplex3.sum(1, keepdim=True)), 1)
    for seed in range(6):
        k = 2 + seed % 2
        jacobian = random_jacobian(seed, k, 12, conflict=seed % 3 == 0).double()
        g = jacobian @ jacobian.T
        rho = 0.4 * g.mean().sqrt()
        w = cagrad_dual(g, rho)
        assert (w >= 0).all() and w.sum().item() == pytest.approx(1.0)
        points = torch.stack((grid, 1 - grid), 1) if k == 2 else simplex3
        best = objective(g, points, rho).min()
        # the exact solution is at least as good as every grid point, and the grid's best is close to it
        assert objective(g, w, rho) <= best + 1e-12
        assert objective(g, w, rho) >= best - 1e-3 * best.abs().clamp_min(1.0)


# ---------------------------------------------------------------- imtl (IMTL-G, Liu et al. 2021)
# alpha_{2..K} = g1 U^T (D U^T)^-1, alpha_1 = 1 - sum; D = g1 - g_i, U = u1 - u_i, u_i = g_i / ||g_i||.


def test_imtl_hand_cases(components):
    w = make(components, "imtl")
    # (1,0), (0,2): u = (1,0), (0,1); D = (1,-2), U = (1,-1); alpha_2 = g1.U / D.U = 1/3, alpha_1 = 2/3
    #   d = (2/3, 2/3): d.u1 = d.u2 = 2/3
    close(w.aggregate(J([1, 0], [0, 2])), [2 / 3, 2 / 3])
    close(w.weights(), [2 / 3, 1 / 3])
    # (1,0), (-1,1): u2 = (-1,1)/sqrt2, D = (2,-1), U = (1 + 1/sqrt2, -1/sqrt2)
    #   alpha_2 = (1 + 1/sqrt2) / (2 + 3/sqrt2) = sqrt2 - 1 = 0.41421356, alpha_1 = 2 - sqrt2 = 0.58578644
    #   d = (3 - 2 sqrt2, sqrt2 - 1) = (0.17157288, 0.41421356); d.u1 = d.u2 = 0.17157288
    close(w.aggregate(J([1, 0], [-1, 1])), [3 - 2 * SQRT2, SQRT2 - 1])
    close(w.weights(), [2 - SQRT2, SQRT2 - 1])
    # identical: D = 0 and the paper's inverse does not exist; G = [[5,5],[5,5]], G^+ = G/100,
    #   G^+ n = (0.1 sqrt5) (1,1) -> alpha = (1/2, 1/2), d = g
    close(w.aggregate(J([1, 2], [1, 2])), [1.0, 2.0])
    close(w.weights(), [0.5, 0.5])
    # three orthogonal (1,0,0), (0,2,0), (0,0,4): G^-1 n = (1, 2/4, 4/16) -> alpha = (4, 2, 1)/7, d = (4/7)(1,1,1)
    three = make(components, "imtl", k=3)
    close(three.aggregate(J([1, 0, 0], [0, 2, 0], [0, 0, 4])), [4 / 7] * 3)
    close(three.weights(), [4 / 7, 2 / 7, 1 / 7])


def test_imtl_equal_projections_on_random_jacobians(components):
    for seed in range(4):
        jacobian = random_jacobian(seed, 3 + seed % 2, 30)
        w = make(components, "imtl", k=jacobian.shape[0])
        d = w.aggregate(jacobian)
        projections = jacobian @ d / jacobian.norm(dim=1)
        assert torch.allclose(projections, projections.mean().expand_as(projections), rtol=1e-4)
        assert w.weights().sum().item() == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------- nashmtl (Navon et al. 2022)
# alpha > 0 with alpha_i (G alpha)_i = 1 on the un-normalised G = J J^T (the official code's constraint
# alpha_i * s * ((G/s) alpha)_i >= 1, s = ||G||_F); d = sum alpha_i g_i, clipped to max_norm. Then
# ||d||^2 = alpha'G alpha = sum_i alpha_i (G alpha)_i = K, whatever the gradients' scale.


def test_nashmtl_hand_cases(components):
    w = make(components, "nashmtl", max_norm=0.0)
    # (1,0), (0,2): G = diag(1, 4), so alpha_i^2 G_ii = 1 -> alpha = (1, 1/2), d = 1 (1,0) + 1/2 (0,2) = (1, 1);
    #   ||d||^2 = 2 = K
    close(w.aggregate(J([1, 0], [0, 2])), [1.0, 1.0], atol=1e-5)
    close(w.weights(), [1.0, 0.5], atol=1e-5)
    # (1,0), (-1,1): G = [[1,-1],[-1,2]]: alpha1 (alpha1 - alpha2) = 1 and alpha2 (2 alpha2 - alpha1) = 1.
    #   Subtracting: alpha1^2 = 2 alpha2^2, so alpha2 = alpha1/sqrt2 and alpha1^2 (1 - 1/sqrt2) = 1:
    #   alpha1 = 1/sqrt(1 - 1/sqrt2) = 1.84775907, alpha2 = 1.30656296,
    #   d = (alpha1 - alpha2, alpha2) = (0.54119610, 1.30656296), ||d||^2 = 0.29289322 + 1.70710678 = 2 = K
    close(w.aggregate(J([1, 0], [-1, 1])), [0.54119610, 1.30656296], atol=1e-5)
    close(w.weights(), [1.84775907, 1.30656296], atol=1e-5)
    # scale: J -> c J gives G -> c^2 G and alpha -> alpha / c, so d is unchanged (here c = 1/100, ||G||_F = 1.7e-3;
    #   solving the Frobenius-normalised equation instead would give ||d|| = sqrt(K ||G||_F), 0.06 here)
    close(w.aggregate(J([0.01, 0], [-0.01, 0.01])), [0.54119610, 1.30656296], atol=1e-5)
    close(w.weights(), [184.775907, 130.656296], atol=1e-3)
    # clipping at the default max_norm = 1: d = (1, 1) has norm sqrt2 -> (1/sqrt2)(1, 1), alpha likewise / sqrt2
    clipped = make(components, "nashmtl")
    close(clipped.aggregate(J([1, 0], [0, 2])), [1 / SQRT2, 1 / SQRT2], atol=1e-5)
    close(clipped.weights(), [1 / SQRT2, 0.5 / SQRT2], atol=1e-5)
    # small gradients: still ||d|| = sqrt2 before clipping, so the clipped step has norm 1, as in the official code
    close(clipped.aggregate(J([0.001, 0], [0, 0.002])), [1 / SQRT2, 1 / SQRT2], atol=1e-5)
    close(clipped.weights(), [1000 / SQRT2, 500 / SQRT2], atol=1e-2)


def newton_bargaining(g: torch.Tensor) -> torch.Tensor:
    """alpha > 0 with alpha_i (G alpha)_i = 1, by Newton on F(x) = e^x * (G e^x) - 1 in x = log alpha
    (Jacobian diag(G alpha) alpha + alpha * G * alpha^T per column), halving the step until ||F|| falls;
    independent of `nash_solve`, which minimises 1/2 a'Ga - sum log a on G/||G||_F."""
    x = -0.5 * g.diagonal().log()  # exact when the gradients are orthogonal
    residual = lambda x: x.exp() * (g @ x.exp()) - 1  # noqa: E731
    for _ in range(100):
        alpha, f = x.exp(), residual(x)
        if f.norm() < 1e-13:
            break
        jac = torch.diag(g @ alpha) * alpha + alpha[:, None] * g * alpha[None, :]
        step = torch.linalg.solve(jac, f)
        t = 1.0
        while residual(x - t * step).norm() >= f.norm() and t > 1e-8:
            t /= 2
        x = x - t * step
    return x.exp()


def test_nashmtl_solution_satisfies_the_bargaining_condition(components):
    for seed in range(6):
        k = 2 + seed % 4
        generator = torch.Generator().manual_seed(seed)
        basis = torch.linalg.qr(torch.randn(k, k, generator=generator, dtype=torch.float64)).Q
        g = basis @ torch.diag(torch.rand(k, generator=generator, dtype=torch.float64) * 4 + 0.5) @ basis.T
        alpha = nash_solve(g, torch.ones(k, dtype=torch.float64), 20)  # cold start
        assert (alpha > 0).all()
        assert torch.allclose(g @ alpha, 1 / alpha, rtol=1e-10)
    # through the module: float32 weights solve the un-normalised equation and match an independent Newton
    # solve of alpha_i (G alpha)_i = 1 (torchjd's NashMTL, the official CCP, needs cvxpy and ecos: not installed),
    # at gradient scales 1e-3 .. 1e3 (||G||_F from about 1e-5 to 1e7), warm-started across the steps
    w = make(components, "nashmtl", k=3, max_norm=0.0)
    for seed in range(9):
        jacobian = random_jacobian(seed, 3, 40, conflict=seed % 3 == 0) * 10.0 ** (seed % 3 * 3 - 3)
        d = w.aggregate(jacobian)
        g = (jacobian @ jacobian.T).double()
        alpha = w.weights().double()
        assert torch.allclose(alpha * (g @ alpha), torch.ones(3, dtype=torch.float64), rtol=1e-4)
        reference = newton_bargaining(g)
        assert torch.allclose(reference * (g @ reference), torch.ones(3, dtype=torch.float64), atol=1e-10)
        assert relative_error(alpha, reference) < 1e-4
        assert relative_error(d.double(), reference @ jacobian.double()) < 1e-4
        assert d.norm().item() == pytest.approx(math.sqrt(3), rel=1e-4)  # ||d||^2 = K


def test_nashmtl_update_weights_every_and_state(components):
    w = make(components, "nashmtl", max_norm=0.0, update_weights_every=2)
    first = w.aggregate(J([1, 0], [0, 2]))
    close(w.weights(), [1.0, 0.5], atol=1e-5)  # see test_nashmtl_hand_cases
    # step 2 reuses alpha on a new Jacobian: d = 1 (1,0) + 0.5 (-1,1)
    close(w.aggregate(J([1, 0], [-1, 1])), [0.5, 0.5], atol=1e-5)
    # step 3 solves again
    w.aggregate(J([1, 0], [-1, 1]))
    close(w.weights(), [1.84775907, 1.30656296], atol=1e-5)
    # the checkpoint holds alpha and the step count: a restored copy continues identically
    restored = make(components, "nashmtl", max_norm=0.0, update_weights_every=2)
    restored.load_state_dict(w.state_dict())
    assert restored.steps == 3
    torch.testing.assert_close(restored.alpha, w.alpha)
    assert torch.equal(restored.aggregate(J([2, 0], [0, 1])), w.aggregate(J([2, 0], [0, 1])))  # a reuse step
    assert first.shape == (2,)


# ---------------------------------------------------------------- aligned (Aligned-MTL, Senushkin et al. 2023)
# M = J J^T = V diag(lambda) V^T, B = sqrt(lambda_min) V diag(1/sqrt(lambda)) V^T; d = (1/K) 1' B J.


def test_aligned_hand_cases(components):
    w = make(components, "aligned")
    # (1,0), (0,2): lambda = (1, 4), V = I, B = diag(1, 1/2): B J = unit rows; d = (0.5, 0.5), weights B 1/2
    close(w.aggregate(J([1, 0], [0, 2])), [0.5, 0.5])
    close(w.weights(), [0.5, 0.25])
    # (1,0), (-1,1): M = [[1,-1],[-1,2]], lambda = (3 -+ sqrt5)/2 = 0.38196601, 2.61803399 (product 1);
    #   v1 = (0.85065081, 0.52573111), v2 = (0.52573111, -0.85065081);
    #   B = v1 v1' + sqrt(l1/l2) v2 v2' = v1 v1' + l1 v2 v2' = [[0.82917961, 0.27639320], [0.27639320, 0.55278640]]
    #   weights B (1/2, 1/2) = (0.55278640, 0.41458980), d = (0.13819660, 0.41458980)
    close(w.aggregate(J([1, 0], [-1, 1])), [0.13819660, 0.41458980])
    close(w.weights(), [0.55278640, 0.41458980])
    # identical: lambda = (0, 10), only 10 kept; B = v v' with v = (1,1)/sqrt2 -> weights (1/2, 1/2), d = g
    close(w.aggregate(J([1, 2], [1, 2])), [1.0, 2.0])


def test_aligned_scale_modes(components):
    # rows (1,0,0), (0,2,0), (0,0,4): lambda = (1, 4, 16), B J = sqrt(scale) I, d = sqrt(scale)/3 (1,1,1)
    jacobian = J([1, 0, 0], [0, 2, 0], [0, 0, 4])
    close(make(components, "aligned", k=3).aggregate(jacobian), [1 / 3] * 3)  # min: 1
    close(make(components, "aligned", k=3, scale_mode="median").aggregate(jacobian), [2 / 3] * 3)  # median: 4
    close(make(components, "aligned", k=3, scale_mode="rmse").aggregate(jacobian), [math.sqrt(7) / 3] * 3)  # mean 7


def test_aligned_gradients_are_orthogonal_with_equal_norms():
    from hydranet.plugins.weighting.aligned import balance_transformation

    for seed in range(4):
        jacobian = random_jacobian(seed, 4, 25, conflict=True).double()
        g = jacobian @ jacobian.T
        aligned = balance_transformation(g, 4 * torch.finfo(torch.float32).eps) @ jacobian
        lambda_min = torch.linalg.eigvalsh(g)[0]
        torch.testing.assert_close(aligned @ aligned.T, lambda_min * torch.eye(4, dtype=torch.float64))


# ---------------------------------------------------------------- upgrad (Quinton and Rey 2024)
# d = (1/K) sum_i pi(g_i), pi = projection onto {v : g_j . v >= 0 for all j}.


def test_upgrad_hand_cases(components):
    w = make(components, "upgrad", reg_eps=0.0)
    # orthogonal (1,0), (0,2): both already in the dual cone -> the mean (0.5, 1)
    close(w.aggregate(J([1, 0], [0, 2])), [0.5, 1.0])
    close(w.weights(), [0.5, 0.5])
    # (1,0), (-1,1): cone = {v1 >= 0, v2 >= v1}. pi(g1) = (0.5, 0.5) (onto v1 = v2) = g1 + 0.5 g2;
    #   pi(g2) = (0, 1) (onto v1 = 0) = g1 + g2; mean (0.25, 0.75), weights ((1 + 1)/2, (0.5 + 1)/2) = (1, 0.75)
    close(w.aggregate(J([1, 0], [-1, 1])), [0.25, 0.75])
    close(w.weights(), [1.0, 0.75])
    close(w.aggregate(J([1, 2], [1, 2])), [1.0, 2.0])  # identical: nothing to project
    # (1,0), (0,1), (-1,-1) sum to 0: the cone is {0}, so the update is 0
    close(make(components, "upgrad", k=3, reg_eps=0.0).aggregate(J([1, 0], [0, 1], [-1, -1])), [0.0, 0.0])
    # the default ridge (1e-4 of the trace) moves the conflicting case by about that much
    close(make(components, "upgrad").aggregate(J([1, 0], [-1, 1])), [0.25, 0.75], atol=1e-3)


def test_upgrad_improves_every_task_on_random_jacobians(components):
    for seed in range(5):
        jacobian = random_jacobian(seed, 2 + seed % 4, 30, conflict=True)
        d = make(components, "upgrad", k=jacobian.shape[0], reg_eps=0.0).aggregate(jacobian)
        assert (jacobian @ d >= -1e-5 * jacobian.norm() * d.norm()).all()


# ---------------------------------------------------------------- against torchjd


class ExactProjector:
    """torchjd's QuadprogProjector (trace normalisation, 1e-4 ridge) with the QP solved by enumerating
    active sets in Python and checking the KKT conditions; quadprog itself is not installed."""

    def __call__(self, u_rows: torch.Tensor, gramian: torch.Tensor) -> torch.Tensor:
        from torchjd._linalg import normalize, regularize

        g = regularize(normalize(gramian, 1e-4), 1e-4).double()
        m = g.shape[0]
        out = []
        for u in u_rows.double():
            for size in range(m + 1):
                found = None
                for free in itertools.combinations(range(m), size):
                    v = u.clone()
                    free_index = list(free)
                    bound = [i for i in range(m) if i not in free]
                    if free_index:
                        rhs = -(g[free_index][:, bound] @ u[bound])
                        v[free_index] = torch.linalg.solve(g[free_index][:, free_index], rhs)
                    multipliers = g @ v
                    if (v >= u - 1e-10).all() and (multipliers[bound] >= -1e-10).all():
                        found = v
                        break
                if found is not None:
                    break
            out.append(found)
        return torch.stack(out).to(u_rows.dtype)


CASES = [(seed, 2 + seed % 4, 10 + 2 * seed, seed % 3 == 0) for seed in range(20)]


@pytest.mark.parametrize("name", ["mgda", "mgda_frank_wolfe", "imtl", "aligned", "upgrad"])
def test_matches_torchjd(components, name):
    """torchjd's MGDA is Frank-Wolfe (100 iterations, epsilon 1e-3), exact for two tasks but short of the
    min-norm point for three or more (test_mgda_is_the_exact_min_norm_point): `mgda`'s default exact solver
    is compared at K = 2 only, and `solver: frank_wolfe` at every K."""
    from torchjd import aggregation

    reference = {"mgda": lambda: aggregation.MGDA(),
                 "mgda_frank_wolfe": lambda: aggregation.MGDA(),
                 "imtl": lambda: aggregation.IMTLG(),
                 "aligned": lambda: aggregation.AlignedMTL(),
                 "upgrad": lambda: aggregation.UPGrad(projector=ExactProjector())}[name]()
    params = {"mgda_frank_wolfe": {"solver": "frank_wolfe"}}.get(name, {})
    cases = [case for case in CASES if case[1] == 2] if name == "mgda" else CASES
    worst = 0.0
    for seed, k, d, conflict in cases:
        jacobian = random_jacobian(seed, k, d, conflict)
        ours = make(components, name.removesuffix("_frank_wolfe"), k=k, **params).aggregate(jacobian)
        worst = max(worst, relative_error(ours, reference(jacobian)))
    assert worst < 1e-4


def test_pcgrad_matches_torchjd(components, monkeypatch):
    from torchjd.aggregation import PCGrad

    # two tasks: the order does not matter
    for seed, k, d, conflict in CASES:
        jacobian = random_jacobian(seed, 2, d, conflict=True)
        assert relative_error(make(components, "pcgrad").aggregate(jacobian), PCGrad()(jacobian)) < 1e-4
    # more tasks: torchjd draws one torch.randperm per task i; hand both sides the same orders
    for seed, k, d, conflict in CASES:
        k = max(k, 3)
        jacobian = random_jacobian(seed, k, d, conflict)
        orders = torch.stack([torch.randperm(k, generator=torch.Generator().manual_seed(seed * 10 + i))
                              for i in range(k)])
        weighting = make(components, "pcgrad", k=k)
        monkeypatch.setattr(weighting, "orders", lambda device, orders=orders: orders)
        ours = weighting.aggregate(jacobian)
        calls = iter(orders)
        monkeypatch.setattr(torch, "randperm", lambda n, *args, **kwargs: next(calls))
        theirs = PCGrad()(jacobian)
        monkeypatch.undo()
        assert relative_error(ours, theirs) < 1e-4


# ---------------------------------------------------------------- the shared solvers


def test_eigendecomposition_of_a_gram_matrix():
    for k in (1, 2, 3, 5, 8, 16):
        jacobian = torch.randn(k, 40, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        g = jacobian @ jacobian.T
        g[0, -1] += 1e-9 * (k > 1)  # rounding can leave J J^T a hair asymmetric: both triangles must count
        values, vectors = _solvers.symmetric_eigh(g)
        symmetric = (g + g.T) / 2
        torch.testing.assert_close(values, torch.linalg.eigvalsh(symmetric), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(vectors.T @ vectors, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close((vectors * values) @ vectors.T, symmetric, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_non_finite_jacobian_gives_a_non_finite_direction_not_an_error(components, name):
    # the engine's loss check then names the task whose loss went non-finite; an exception from a solver
    # (linalg.eigh raises on NaN) would end the run without that
    for bad in (torch.nan, torch.inf):
        jacobian = random_jacobian(0, 3, 20, conflict=True)
        jacobian[1, 4] = bad
        direction = make(components, name, k=3).aggregate(jacobian)
        assert direction.shape == (20,) and not torch.isfinite(direction).all(), (name, bad)


def test_pinv_of_a_singular_gram_matrix():
    jacobian = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    g = jacobian @ jacobian.T  # rank 2
    torch.testing.assert_close(_solvers.psd_pinv(g, 1e-10), torch.linalg.pinv(g, hermitian=True))


def test_box_qp_exact_and_iterative_agree():
    for seed, k in ((0, 3), (1, 5), (2, 8)):
        jacobian = random_jacobian(seed, k, 20, conflict=True).double()
        g = jacobian @ jacobian.T
        g = g / g.trace() + 1e-3 * torch.eye(k, dtype=torch.float64)
        lower = torch.eye(k, dtype=torch.float64) / k
        exact = _solvers.box_qp(g, lower)
        assert (exact >= lower - 1e-12).all()
        # KKT: the multipliers G v are >= 0 and vanish where v is off its bound
        multipliers = exact @ g
        assert (multipliers >= -1e-10).all()
        assert (torch.where(exact > lower + 1e-9, multipliers.abs(), 0.0) < 1e-9).all()
        torch.testing.assert_close(_solvers._box_qp_iterative(g, lower, 3000), exact, atol=1e-6, rtol=0)


def test_many_tasks_use_the_iterative_solvers(components):
    # more tasks than the 2^K enumeration takes: UPGrad still improves every task (to the solver's accuracy) ...
    k = _solvers.MAX_EXACT_TASKS + 2
    jacobian = random_jacobian(3, k, 60, conflict=True)
    d = make(components, "upgrad", k=k, reg_eps=0.0).aggregate(jacobian)
    assert (jacobian @ d >= -1e-4 * jacobian.norm() * d.norm()).all()
    # ... and CAGrad's dual is solved: F is convex, so F(w) - F* <= the Frank-Wolfe gap grad.w - min_i grad_i
    g = (jacobian @ jacobian.T).double()
    rho = 0.4 * g.mean().sqrt()
    w = cagrad_dual(g, rho, 100)
    assert (w >= 0).all() and w.sum().item() == pytest.approx(1.0)
    gradient = g.mean(1) + rho * (g @ w) / (w @ g @ w).sqrt()
    assert (gradient @ w - gradient.min()).item() < 1e-8 * g.diagonal().mean().item()


def test_cagrad_iterative_dual_agrees_with_the_exact_one():
    from hydranet.plugins.weighting.cagrad import _cagrad_dual_iterative

    for seed in range(4):
        jacobian = random_jacobian(seed, 4, 20, conflict=seed % 2 == 0).double()
        g = jacobian @ jacobian.T
        rho = 0.4 * g.mean().sqrt()
        torch.testing.assert_close(_cagrad_dual_iterative(g, g.mean(1), rho, 300), cagrad_dual(g, rho),
                                   atol=1e-6, rtol=0)


# ---------------------------------------------------------------- the engine's contract


@pytest.mark.parametrize("name", STRATEGIES)
def test_no_host_synchronisation(components, name):
    # Meta tensors have no values: .item(), float(), .tolist(), a Python `if` on a tensor, or indexing with a
    # 0-d tensor all raise. Every step on them proves the GPU never waits for the CPU, except for the one
    # status check inside linalg.eigh (imtl, aligned), measured cheaper than a sync-free solver (core/eigen.py).
    extra = {"nashmtl": {"update_weights_every": 2}, "mgda": {"normalization": "l2"}}.get(name, {})
    w = make(components, name, k=3, **extra).to("meta")
    for _ in range(3):
        direction = w.aggregate(torch.ones(3, 50, device="meta"))
        assert direction.device.type == "meta" and direction.shape == (50,)
        assert w.weights().device.type == "meta" and w.weights().shape == (3,)


def test_no_host_synchronisation_with_many_tasks(components):
    k = _solvers.MAX_EXACT_TASKS + 1
    for name in ("cagrad", "upgrad", "aligned", "mgda"):  # mgda falls back to Frank-Wolfe past the exact solver
        w = make(components, name, k=k, **({"iterations": 3} if name in ("cagrad", "upgrad") else {})).to("meta")
        assert w.aggregate(torch.ones(k, 20, device="meta")).device.type == "meta"
    w = make(components, "mgda", k=3, solver="frank_wolfe").to("meta")  # and on request, below it
    assert w.aggregate(torch.ones(3, 20, device="meta")).device.type == "meta"


def test_the_exact_min_norm_solver_on_degenerate_gradients():
    """One task, a zero gradient, two equal gradients: cases where a KKT system is singular."""
    one = torch.tensor([[4.0]], dtype=torch.float64)
    torch.testing.assert_close(_solvers.min_norm_simplex(one), torch.ones(1, dtype=torch.float64))
    # a zero gradient is in the hull: the min-norm point is 0, all weight on that task
    jacobian = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    weights = _solvers.min_norm_simplex(jacobian @ jacobian.T)
    torch.testing.assert_close(weights, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    # g1 = g2 = (1, 0), g3 = (0, 1): the hull is the segment from (1, 0) to (0, 1), min-norm point (1/2, 1/2),
    # which the first two tasks share in any split; the direction is what must be right
    jacobian = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    weights = _solvers.min_norm_simplex(jacobian @ jacobian.T)
    assert weights.min() >= 0 and weights.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(weights @ jacobian, torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_mgda_past_the_exact_solver_uses_frank_wolfe():
    k = _solvers.MAX_EXACT_TASKS + 1
    jacobian = random_jacobian(3, k, 30).double()
    g = jacobian @ jacobian.T
    torch.testing.assert_close(_solvers.min_norm_simplex(g), _solvers.frank_wolfe_min_norm(g))


@pytest.mark.parametrize("name", STRATEGIES)
def test_bf16_backward_gives_finite_gradients(components, name):
    model, tasks, images, targets = tiny_model_and_batch(components)
    for space in ("features", "params"):
        weighting = make(components, name, k=3, grad_space=space)
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = model.features(images)
            outputs = model.heads_forward(features)
        assert features.dtype == torch.bfloat16
        losses = task_losses(tasks, outputs, targets)
        context = StepContext(features, model.shared_parameters(), model.head_parameters(),
                              model.last_shared_parameters())
        total = weighting.backward(losses, context)
        assert torch.isfinite(total)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert len(grads) == len(list(model.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in (p.grad for p in model.shared_parameters()))
        assert torch.isfinite(weighting.weights()).all()
