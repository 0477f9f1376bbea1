"""rlw, gls, famo, gradnorm and dbmtl against values worked out by hand from their papers.

Each expected number is derived in the comment next to it from the formula in
the strategy's docstring; the code under test never produces an expectation.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

import hydranet
from conftest import make_tasks, tiny_model_and_batch, tiny_spec
from hydranet.core.forward import task_losses
from hydranet.core.errors import SpecError
from hydranet.core.interfaces import StepContext
from hydranet.core.plugins import Components, load_components, make_plugin_manager
from hydranet.core.spec import load_spec

STRATEGIES = ("rlw", "gls", "famo", "gradnorm", "dbmtl")
LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def components() -> Components:
    return load_components(make_plugin_manager(entry_points=False))


def make(components: Components, name: str, tasks: tuple[str, ...] = ("age", "gender"), **params):
    entry = components.weightings.get(name)
    validated = entry.validate_params(params)
    built = make_tasks(components, *tasks)
    return entry.factory(built, validated) if validated is not None else entry.factory(built)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def lv(*values: float) -> torch.Tensor:
    """Per-task losses as the engine hands them over: part of an autograd graph (here, leaves)."""
    return t(*values).requires_grad_()


def linear_step(w, f_values, context_extra=None):
    """One backward on the toy problem L_1 = 3 f_0 + 4 f_1, L_2 = f_1 at features f (1, 2).

    grad_f L_1 = [3, 4] (norm 5), grad_f L_2 = [0, 1] (norm 1), whatever f is.
    Returns the features (with their .grad) and the losses.
    """
    f = torch.tensor([f_values], requires_grad=True)
    losses = torch.stack([3 * f[0, 0] + 4 * f[0, 1], f[0, 1]])
    w.backward(losses, StepContext(f, [], [], context_extra or []))
    return f, losses


# ---------------------------------------------------------------- registration


def test_each_cites_its_paper(components):
    """(Registration, description and reference: test_weighting_suite, for every built-in.)"""
    assert components.pm.load_errors() == []
    refs = {n: components.weightings.get(n).factory.reference for n in STRATEGIES}
    assert "Lin" in refs["rlw"] and "TMLR 2022" in refs["rlw"]
    assert "Chennupati" in refs["gls"] and "Liu" in refs["famo"] and "NeurIPS 2023" in refs["famo"]
    assert "Chen" in refs["gradnorm"] and "ICML 2018" in refs["gradnorm"] and "2308.12029" in refs["dbmtl"]
    # only the two that read the representation make the engine split backbone and heads
    assert {n for n in STRATEGIES if components.weightings.get(n).factory.needs_features} == {"gradnorm", "dbmtl"}


# ---------------------------------------------------------------- rlw


@pytest.mark.parametrize("distribution", ["normal", "dirichlet", "uniform"])
def test_rlw_weights_are_on_the_simplex_and_change_every_step(components, distribution):
    w = make(components, "rlw", ("age", "gender", "ethnicity"), distribution=distribution, seed=7)
    assert w.weights().tolist() == pytest.approx([1 / 3] * 3)  # before any step: the expectation, 1/K
    seen = []
    for _ in range(5):
        losses = t(1.0, 2.0, 3.0).requires_grad_()
        total = w.backward(losses)
        weights = w.weights()
        assert (weights > 0).all() and weights.sum().item() == pytest.approx(1.0)
        # the step used exactly the logged weights: d total / d L = lambda, total = lambda . L
        assert losses.grad.tolist() == pytest.approx(weights.tolist())
        assert total.item() == pytest.approx((weights * t(1.0, 2.0, 3.0)).sum().item())
        seen.append(weights.tolist())
    assert all(a != b for a, b in zip(seen, seen[1:]))


def test_rlw_normal_is_the_softmax_of_a_standard_normal_draw(components):
    from hydranet.plugins.weighting.rlw import step_seed

    w = make(components, "rlw", ("age", "gender", "ethnicity"), seed=11)
    w.backward(lv(1.0, 1.0, 1.0))
    # lambda = softmax(z): log lambda_i - log lambda_j = z_i - z_j for the documented draw of step 0
    z = torch.randn(3, generator=torch.Generator().manual_seed(step_seed(11, 0)))
    logs = torch.log(w.weights())
    torch.testing.assert_close(logs - logs[0], z - z[0])


def test_rlw_uniform_and_dirichlet_are_the_softmax_of_the_documented_draws(components):
    from hydranet.plugins.weighting.rlw import step_seed

    uniform = make(components, "rlw", ("age", "gender", "ethnicity"), distribution="uniform", seed=11)
    dirichlet = make(components, "rlw", ("age", "gender", "ethnicity"), distribution="dirichlet", seed=11)
    for step in range(3):
        # step t draws u ~ U[0, 1)^3 from a generator seeded with step_seed(seed, t)
        u = torch.rand(3, generator=torch.Generator().manual_seed(step_seed(11, step)))
        # uniform: lambda = softmax(u)
        expected = torch.exp(u) / torch.exp(u).sum()
        torch.testing.assert_close(uniform.draw(), expected)
        # dirichlet: Exp(1) draws e = -log(1 - u), x = e / sum(e) ~ Dir(1, 1, 1), then lambda = softmax(x)
        e = -torch.log(1 - u)
        x = e / e.sum()
        expected = torch.exp(x) / torch.exp(x).sum()
        torch.testing.assert_close(dirichlet.draw(), expected)
        # the softmax keeps a Dirichlet draw (on the simplex) within [1/(e + 2), e/(e + 2)] = [0.212, 0.576]
        assert expected.min() >= 1 / (math.e + 2) and expected.max() <= math.e / (math.e + 2)


def test_rlw_each_distribution_averages_one_over_k(components):
    # E[lambda_i] = 1/K by symmetry for every distribution; 3000 draws put the mean within ~0.01
    for distribution in ("normal", "dirichlet", "uniform"):
        w = make(components, "rlw", ("age", "gender", "ethnicity"), distribution=distribution, seed=3)
        draws = torch.stack([w.draw() for _ in range(3000)])
        assert draws.mean(0).tolist() == pytest.approx([1 / 3] * 3, abs=0.02), distribution
    # and they differ in spread: uniform-then-softmax stays close to 1/K, normal-then-softmax does not
    spread = {}
    for distribution in ("normal", "uniform"):
        w = make(components, "rlw", ("age", "gender", "ethnicity"), distribution=distribution, seed=3)
        spread[distribution] = torch.stack([w.draw() for _ in range(500)]).std().item()
    assert spread["uniform"] < spread["normal"]


def test_rlw_is_reproducible_per_seed_and_defaults_to_the_run_seed(components):
    def run(**params) -> list[list[float]]:
        w = make(components, "rlw", **params)
        return [w.draw().tolist() for _ in range(4)]

    assert run(seed=1) == run(seed=1)
    assert run(seed=1) != run(seed=2)
    torch.manual_seed(123)
    first = run()
    torch.manual_seed(123)
    assert run() == first  # the engine seeds torch with train.seed before building the weighting
    torch.manual_seed(124)
    assert run() != first


def test_rlw_resumes_the_same_stream_from_a_checkpoint(components):
    w = make(components, "rlw", seed=5)
    for _ in range(3):
        w.backward(lv(1.0, 1.0))
    buffer = io.BytesIO()
    torch.save(w.state_dict(), buffer)
    buffer.seek(0)
    restored = make(components, "rlw", seed=5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))  # how checkpoints are read
    assert restored.draws == 3
    assert restored.weights().tolist() == w.weights().tolist()
    assert restored.draw().tolist() == w.draw().tolist()  # step 4 of the same stream


# ---------------------------------------------------------------- gls
# L = (prod L_i)^(1/K); dL/dL_i = L / (K L_i)


def test_gls_value_and_multipliers(components):
    w = make(components, "gls")
    losses = t(1.0, 4.0).requires_grad_()
    total = w.backward(losses)
    # sqrt(1 * 4) = 2; multipliers 2/(2*1) = 1, 2/(2*4) = 0.25
    assert total.item() == pytest.approx(2.0)
    assert losses.grad.tolist() == pytest.approx([1.0, 0.25])
    assert w.weights().tolist() == pytest.approx([1.0, 0.25])

    w3 = make(components, "gls", ("age", "gender", "ethnicity"))
    losses = t(2.0, 4.0, 8.0).requires_grad_()
    # (2*4*8)^(1/3) = 64^(1/3) = 4; multipliers 4/(3*2) = 2/3, 4/(3*4) = 1/3, 4/(3*8) = 1/6
    assert w3.backward(losses).item() == pytest.approx(4.0)
    assert losses.grad.tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 6])
    assert w3.weights().tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 6])


def test_gls_is_computed_in_log_space(components):
    w = make(components, "gls", ("age", "gender", "ethnicity"))
    # the product 1e60 overflows float32 (max 3.4e38); the geometric mean is still 1e20
    assert w.combine(t(1e20, 1e20, 1e20)).item() == pytest.approx(1e20, rel=1e-5)
    # a task without a labelled row (loss exactly 0) is clamped to 1e-8: sqrt(1e-8 * 4) = 2e-4, finite,
    # and that task's gradient stops (multiplier 0), the other's is 2e-4 / (2*4) = 2.5e-5
    w2 = make(components, "gls")
    losses = t(0.0, 4.0).requires_grad_()
    assert w2.backward(losses).item() == pytest.approx(2e-4)
    assert losses.grad.tolist() == pytest.approx([0.0, 2.5e-5])
    assert w2.weights().tolist() == pytest.approx([0.0, 2.5e-5])


def test_gls_takes_no_parameters(components):
    from hydranet.core.errors import ComponentError

    with pytest.raises(ComponentError):
        components.weightings.get("gls").validate_params({"alpha": 1})


# ---------------------------------------------------------------- famo
# z = softmax(xi); L = sum_i c z_i log L_i with c = 1/sum_j(z_j/L_j);
# delta = log L(prev) - log L(now); xi <- xi - lr (z*(delta - z.delta) + wd xi)


def test_famo_loss_and_its_gradient(components):
    w = make(components, "famo")
    losses = t(2.0, 1.0).requires_grad_()
    total = w.combine(losses)
    # z = [0.5, 0.5]; c = 1/(0.5/2 + 0.5/1) = 4/3; L = 4/3 (0.5 ln2 + 0.5 ln1) = (2/3) ln2 = 0.46209812
    assert total.item() == pytest.approx(0.46209812)
    total.backward()
    # dL/dL_i = c z_i / L_i = [4/3 * 0.5/2, 4/3 * 0.5/1] = [1/3, 2/3] (they sum to 1 by construction of c)
    assert losses.grad.tolist() == pytest.approx([1 / 3, 2 / 3])


def test_famo_first_step_makes_no_update_then_sgd_step_by_hand(components):
    w = make(components, "famo", optimizer="sgd")  # lr 0.025, weight decay 1e-3
    w.backward(lv(2.0, 1.0))
    # step 1: nothing to compare with, so xi stays 0 and the losses are remembered
    assert w.logits.tolist() == [0.0, 0.0] and w.steps.item() == 1
    assert w.previous_log_losses.tolist() == pytest.approx([LN2, 0.0])
    losses = t(1.0, 1.0).requires_grad_()
    w.backward(losses)
    # step 2: delta = [ln2 - 0, 0 - 0]; z = [.5, .5]; z.delta = ln2/2
    #   J^T delta = z * (delta - z.delta) = [ln2/4, -ln2/4] = [0.17328680, -0.17328680]; wd * xi = 0
    #   xi = -0.025 * [0.17328680, -0.17328680] = [-0.00433217, 0.00433217]
    #   z_1 = 1/(1 + e^(2*0.00433217)) = 0.49783393: the task that improved more loses weight
    assert w.logits.tolist() == pytest.approx([-0.00433217, 0.00433217], abs=1e-7)
    assert w.weights().tolist() == pytest.approx([0.49783393, 0.50216607], abs=1e-7)
    # the step's loss already used the new weights: L = [1, 1] gives c = 1 and dL/dL_i = z_i
    assert losses.grad.tolist() == pytest.approx([0.49783393, 0.50216607], abs=1e-7)
    w.backward(lv(1.0, 1.0))
    # step 3: delta = 0, only the decay acts: xi *= 1 - 0.025 * 1e-3 -> 0.00433217 * 0.999975 = 0.00433206
    assert w.logits.tolist() == pytest.approx([-0.00433206, 0.00433206], abs=1e-8)


def test_famo_adam_step_by_hand(components):
    w = make(components, "famo")  # the official code's Adam
    w.backward(lv(2.0, 1.0))
    w.backward(lv(1.0, 1.0))
    # Adam's first update: m^ = g, v^ = g^2, so the step is lr * sign(g) = 0.025 * [+1, -1]
    #   xi = [-0.025, 0.025]; z_1 = 1/(1 + e^0.05) = 0.48750260
    assert w.logits.tolist() == pytest.approx([-0.025, 0.025], abs=1e-6)
    assert w.weights().tolist() == pytest.approx([0.48750260, 0.51249740], abs=1e-6)
    assert w.adam_m.tolist() == pytest.approx([0.1 * 0.17328680, -0.1 * 0.17328680], abs=1e-7)


def test_famo_balances_rates_not_scales(components):
    # two tasks whose losses both fall by 10% per step, at scales 100x apart: equal rates, so z stays equal
    w = make(components, "famo", optimizer="sgd", weight_decay=0.0)
    for step in range(5):
        w.backward(lv(100.0, 1.0) * 0.9 ** step)
    assert w.weights().tolist() == pytest.approx([0.5, 0.5], abs=1e-6)


# ---------------------------------------------------------------- gradnorm
# G_i = w_i ||g_i||; r_i = (L_i/L_i(0)) / mean_j(L_j/L_j(0)); T_i = mean(G) r_i^alpha;
# dL_grad/dw_i = sign(G_i - T_i) ||g_i||


def test_gradnorm_two_steps_by_hand(components):
    w = make(components, "gradnorm")  # alpha 1.5
    f, losses = linear_step(w, [1.0, 1.0])
    # step 1: L = [7, 1] = L(0); w = [1, 1]; norms [5, 1]; G = [5, 1], mean 3; r = [1, 1]; T = [3, 3]
    #   sign(G - T) = [+1, -1] -> w.grad = [5, -1]
    assert w.task_weights.grad.tolist() == pytest.approx([5.0, -1.0])
    assert w.initial_losses.tolist() == pytest.approx([7.0, 1.0])
    # the model is trained on sum w_i L_i with w constant: grad_f = 1*[3, 4] + 1*[0, 1] = [3, 5]
    assert f.grad.flatten().tolist() == pytest.approx([3.0, 5.0])
    with torch.no_grad():  # what the engine's optimizer does (plain SGD, lr 0.1): w = [0.5, 1.1]
        w.task_weights -= 0.1 * w.task_weights.grad
    w.task_weights.grad = None
    # the log already shows the renormalised weights: 2 * [0.5, 1.1] / 1.6 = [0.625, 1.375]
    assert w.weights().tolist() == pytest.approx([0.625, 1.375])
    f, losses = linear_step(w, [5 / 3, 0.5])
    # step 2: renormalised in place to [0.625, 1.375] (sum K = 2)
    assert w.task_weights.tolist() == pytest.approx([0.625, 1.375])
    # L = [3*5/3 + 4*0.5, 0.5] = [7, 0.5]; L/L(0) = [1, 0.5], mean 0.75 -> r = [4/3, 2/3]
    # G = [0.625*5, 1.375*1] = [3.125, 1.375], mean 2.25
    # T = 2.25 * [(4/3)^1.5, (2/3)^1.5] = 2.25 * [1.53960072, 0.54433105] = [3.46410162, 1.22474487]
    # G - T = [-0.339, +0.150] -> w.grad = [-5, +1]: the lagging task 1 gains weight
    assert w.task_weights.grad.tolist() == pytest.approx([-5.0, 1.0])
    # grad_f = 0.625*[3, 4] + 1.375*[0, 1] = [1.875, 3.875]
    assert f.grad.flatten().tolist() == pytest.approx([1.875, 3.875])
    assert w.initial_losses.tolist() == pytest.approx([7.0, 1.0])  # L(0) stays the first step's


def test_gradnorm_alpha_zero_equalises_gradient_norms(components):
    w = make(components, "gradnorm", alpha=0.0)
    with torch.no_grad():
        w.task_weights.copy_(t(0.1, 1.9))
    linear_step(w, [1.0, 1.0])
    # alpha 0: T = mean(G) for every task. G = [0.1*5, 1.9*1] = [0.5, 1.9], mean 1.2 -> signs [-, +] -> [-5, 1]
    assert w.task_weights.grad.tolist() == pytest.approx([-5.0, 1.0])


def test_gradnorm_renormalisation_keeps_weights_positive(components):
    w = make(components, "gradnorm", ("age", "gender", "ethnicity"))
    with torch.no_grad():
        w.task_weights.copy_(t(-1.0, 2.0, 4.0))
    # a weight pushed below 0 is floored at 1e-6 first: 3 * [1e-6, 2, 4] / (6 + 1e-6) = [5e-7, 1, 2]
    assert w.weights().tolist() == pytest.approx([5e-7, 1.0, 2.0], rel=1e-5)
    assert (w.weights() > 0).all() and w.weights().sum().item() == pytest.approx(3.0)


def test_gradnorm_params_space_uses_the_last_shared_layer(components):
    w = make(components, "gradnorm", grad_space="params")
    layer = torch.nn.Parameter(torch.eye(2))
    x = torch.tensor([[2.0, 0.0]])
    features = x @ layer.T  # [[2, 0]]
    losses = torch.stack([3 * features[0, 0] + 4 * features[0, 1], 1 + features[0, 1]])
    w.backward(losses, StepContext(features, [layer], [], [layer]))
    # grad_W L_1 = [3, 4]^T [2, 0] -> norm 5*2 = 10; grad_W L_2 = [0, 1]^T [2, 0] -> norm 2
    # step 1: r = [1, 1]; G = [10, 2], T = [6, 6] -> w.grad = [+10, -2]
    assert w.task_weights.grad.tolist() == pytest.approx([10.0, -2.0])
    # the layer still gets the model's gradient of w . L = [3, 5]^T [2, 0]
    assert layer.grad.flatten().tolist() == pytest.approx([6.0, 0.0, 10.0, 0.0])


# ---------------------------------------------------------------- dbmtl
# features: n^ = b n^ + (1-b) ||g||; d = sum_i max(n^)/n^_i g_i
# params:   g^ = b g^ + (1-b) g;      d = sum_i max||g^||/||g^_i|| g^_i


def test_dbmtl_features_direction_by_hand(components):
    w = make(components, "dbmtl")  # beta 0.9, sigma 0
    d1 = w.aggregate(t(3, 4, 0, 1).view(2, 2))
    # norms [5, 1]; n^ = 0.1 * [5, 1] = [0.5, 0.1]; scale = 0.5/[0.5, 0.1] = [1, 5]
    # d = [3, 4] + 5 * [0, 1] = [3, 9]: both tasks now push with norm 5
    assert w.weights().tolist() == pytest.approx([1.0, 5.0])
    assert d1.tolist() == pytest.approx([3.0, 9.0])
    d2 = w.aggregate(t(0, 2, 1, 0).view(2, 2))
    # norms [2, 1]; n^ = 0.9*[0.5, 0.1] + 0.1*[2, 1] = [0.65, 0.19]; scale = [1, 0.65/0.19 = 3.42105263]
    # d = [0, 2] + 3.42105263 * [1, 0] = [3.42105263, 2]
    assert w.ema.tolist() == pytest.approx([0.65, 0.19])
    assert d2.tolist() == pytest.approx([3.42105263, 2.0], rel=1e-5)


def test_dbmtl_beta_schedule(components):
    w = make(components, "dbmtl", beta_sigma=0.5)
    w.aggregate(t(3, 4, 0, 1).view(2, 2))  # beta_1 = 0.9/1 -> n^ = [0.5, 0.1]
    d = w.aggregate(t(0, 2, 1, 0).view(2, 2))
    # beta_2 = 0.9/sqrt(2) = 0.63639610; n^ = 0.6364*[0.5, 0.1] + 0.3636*[2, 1] = [1.04540585, 0.42724351]
    # scale_2 = 1.04540585/0.42724351 = 2.44686187; d = [2.44686187, 2]
    assert w.ema.tolist() == pytest.approx([1.04540585, 0.42724351], rel=1e-5)
    assert d.tolist() == pytest.approx([2.44686187, 2.0], rel=1e-5)


def test_dbmtl_params_space_averages_the_gradients(components):
    w = make(components, "dbmtl", grad_space="params")
    d1 = w.aggregate(t(3, 4, 0, 1).view(2, 2))
    # g^ = 0.1 * J = [[0.3, 0.4], [0, 0.1]]: norms [0.5, 0.1] -> scale [1, 5]; d = [0.3, 0.4 + 0.5] = [0.3, 0.9]
    # (the zero start shrinks the first steps, as in LibMTL)
    assert d1.tolist() == pytest.approx([0.3, 0.9])
    d2 = w.aggregate(t(0, 2, 1, 0).view(2, 2))
    # g^ = 0.9 g^ + 0.1 J2 = [[0.27, 0.36 + 0.2], [0.1, 0.09]] = [[0.27, 0.56], [0.1, 0.09]]
    # norms: sqrt(0.0729 + 0.3136) = 0.62169124, sqrt(0.01 + 0.0081) = 0.13453624 -> scale_2 = 4.62099461
    # d = [0.27 + 0.462099461, 0.56 + 0.415889515] = [0.73209946, 0.97588951]
    assert w.ema.flatten().tolist() == pytest.approx([0.27, 0.56, 0.1, 0.09])
    assert w.weights().tolist() == pytest.approx([1.0, 4.62099461], rel=1e-5)
    assert d2.tolist() == pytest.approx([0.73209946, 0.97588951], rel=1e-5)


def test_dbmtl_on_a_model_heads_get_log_loss_gradients(components):
    model, tasks, images, targets = tiny_model_and_batch(components)
    w = make(components, "dbmtl", ("age", "gender", "ethnicity"))
    features = model.features(images)
    losses = task_losses(tasks, model.heads_forward(features), targets)
    heads = model.head_parameters()
    # expectations from plain autograd: heads see grad of sum_i log(L_i + 1e-8)
    logs = torch.log(losses + 1e-8)
    expected_heads = torch.autograd.grad(logs.sum(), heads, retain_graph=True)
    jac = torch.stack([torch.autograd.grad(logs[i], features, retain_graph=True)[0].flatten() for i in range(3)])
    norms = jac.norm(dim=1)
    direction = (norms.max() / (0.1 * norms + 1e-8) * 0.1) @ jac  # step 1: n^ = 0.1 n, scale = max n / n
    expected_backbone = torch.autograd.grad(features, model.shared_parameters(),
                                            grad_outputs=direction.view_as(features), retain_graph=True)
    w.backward(losses, StepContext(features, model.shared_parameters(), heads, model.last_shared_parameters()))
    for p, g in zip(heads, expected_heads):
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(model.shared_parameters(), expected_backbone):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w.weights(), (0.1 * norms).max() / (0.1 * norms + 1e-8))
    assert w.weights().min().item() == pytest.approx(1.0, rel=1e-4)  # the largest-norm task keeps its gradient


def test_dbmtl_params_state_round_trip(components):
    model, tasks, images, targets = tiny_model_and_batch(components)
    w = make(components, "dbmtl", ("age", "gender", "ethnicity"), grad_space="params")
    for _ in range(2):
        model.zero_grad()
        features = model.features(images)
        losses = task_losses(tasks, model.heads_forward(features), targets)
        w.backward(losses, StepContext(features, model.shared_parameters(), model.head_parameters(), []))
    d = sum(p.numel() for p in model.shared_parameters())
    assert w.ema.shape == (3, d) and w.steps.item() == 2
    fresh = make(components, "dbmtl", ("age", "gender", "ethnicity"), grad_space="params")
    fresh.load_state_dict(w.state_dict())  # the model-sized average is resized on load
    torch.testing.assert_close(fresh.ema, w.ema)
    assert fresh.steps.item() == 2 and fresh.weights().tolist() == w.weights().tolist()


# ---------------------------------------------------------------- the contract, for every strategy


def meta_step(w):
    """One backward on meta tensors: any host read of a value would raise."""
    layer = torch.nn.Parameter(torch.ones(5, 5, device="meta"))
    x = torch.ones(4, 5, device="meta")
    features = x @ layer
    losses = torch.stack([features[:, i].square().mean() for i in range(3)])
    return w.backward(losses, StepContext(features, [layer], [], [layer]))


@pytest.mark.parametrize(("name", "params"), [
    ("rlw", {}), ("rlw", {"distribution": "dirichlet"}), ("gls", {}), ("famo", {}), ("famo", {"optimizer": "sgd"}),
    ("gradnorm", {}), ("gradnorm", {"grad_space": "params"}), ("dbmtl", {}), ("dbmtl", {"grad_space": "params"}),
])
def test_no_host_synchronisation(components, name, params):
    # Meta tensors have no values: .item(), float(), .tolist() or a Python `if` on one raises,
    # so three whole steps running on them prove the strategy never waits for the device.
    w = make(components, name, ("age", "gender", "ethnicity"), **params).to("meta")
    for _ in range(3):
        assert meta_step(w).device.type == "meta"
        weights = w.weights()
        assert weights.device.type == "meta" and weights.shape == (3,) and not weights.requires_grad
        w.epoch_end(torch.ones(3, device="meta"))
    assert all(b.device.type == "meta" for b in w.buffers())


@pytest.mark.parametrize("name", STRATEGIES)
def test_weights_before_training_and_wrong_shapes(components, name):
    w = make(components, name, ("age", "gender", "ethnicity"))
    weights = w.weights()
    assert weights.shape == (3,) and weights.dtype == torch.float32 and weights.grad_fn is None
    if name in ("rlw", "gls", "famo"):
        with pytest.raises(ValueError, match=r"shape \(3,\)"):
            w.combine(torch.ones(3, 1))


def test_state_dicts_hold_learned_state_only(components):
    keys = {name: set(make(components, name).state_dict()) for name in STRATEGIES}
    assert keys["rlw"] == {"last_weights", "_extra_state"}
    assert keys["gls"] == {"last_weights"}
    assert keys["famo"] == {"logits", "previous_log_losses", "steps", "adam_m", "adam_v"}
    assert keys["gradnorm"] == {"task_weights", "initial_losses", "steps"}
    assert keys["dbmtl"] == {"last_weights", "ema", "steps"}


def test_famo_and_gradnorm_resume_from_a_state_dict(components):
    famo = make(components, "famo")
    for losses in ((2.0, 1.0), (1.0, 1.0), (0.5, 0.9)):
        famo.backward(lv(*losses))
    restored = make(components, "famo")
    restored.load_state_dict(famo.state_dict())
    famo.backward(lv(0.4, 0.8))
    restored.backward(lv(0.4, 0.8))  # the next step continues exactly where the original goes
    assert restored.weights().tolist() == famo.weights().tolist()
    assert restored.weights().tolist() != make(components, "famo").weights().tolist()
    assert restored.steps.item() == 4

    gradnorm = make(components, "gradnorm")
    linear_step(gradnorm, [1.0, 1.0])
    fresh = make(components, "gradnorm")
    fresh.load_state_dict(gradnorm.state_dict())
    assert fresh.initial_losses.tolist() == [7.0, 1.0] and fresh.steps.item() == 1
    linear_step(fresh, [5 / 3, 0.5])  # step 2 of the hand-worked example with w still [1, 1]
    # G = [5, 1], mean 3; r = [4/3, 2/3]; T = 3 * [1.5396, 0.5443] = [4.62, 1.63] -> w.grad = [+5, -1]
    assert fresh.task_weights.grad.tolist() == pytest.approx([5.0, -1.0])


def test_gradnorm_weights_are_optimised_by_the_engine_optimizer(components):
    w = make(components, "gradnorm")
    assert [n for n, _ in w.named_parameters()] == ["task_weights"]
    for name in ("rlw", "gls", "famo", "dbmtl"):
        assert list(make(components, name).parameters()) == []  # nothing for the main optimizer to touch


# ---------------------------------------------------------------- through a spec and the engine


def spec(weighting) -> dict:
    return {"tasks": ["age", "gender"], "data": {"name": "utkface", "root": "x"}, "backbone": "tiny",
            "weighting": weighting}


@pytest.mark.parametrize(("weighting", "path"), [
    ({"name": "rlw", "distribution": "gaussian"}, "weighting.distribution"),
    ({"name": "rlw", "seed": -1}, "weighting.seed"),
    ({"name": "gls", "alpha": 1}, "weighting.alpha"),
    ({"name": "famo", "lr": 0}, "weighting.lr"),
    ({"name": "famo", "update": "same_batch"}, "weighting.update"),
    ({"name": "famo", "gama": 0.1}, "weighting.gama"),
    ({"name": "gradnorm", "alpha": -1}, "weighting.alpha"),
    ({"name": "gradnorm", "grad_space": "weights"}, "weighting.grad_space"),
    ({"name": "dbmtl", "beta": 1.5}, "weighting.beta"),
    ({"name": "dbmtl", "beta_sigma": -0.5}, "weighting.beta_sigma"),
])
def test_spec_reports_bad_params(components, weighting, path):
    with pytest.raises(SpecError) as info:
        load_spec(spec(weighting), components=components)
    assert [p for p, _ in info.value.problems] == [path]


def test_spec_builds_each_strategy_with_its_params(components):
    resolved = load_spec(spec({"name": "famo", "lr": 0.01, "optimizer": "sgd"}), components=components)
    famo = resolved.build_weighting(resolved.build_tasks())
    assert (famo.lr, famo.optimizer, famo.weight_decay) == (0.01, "sgd", 1e-3)
    assert resolved.to_dict()["weighting"] == {"name": "famo", "lr": 0.01, "weight_decay": 1e-3,
                                               "optimizer": "sgd", "update": "next_batch"}
    resolved = load_spec(spec("dbmtl"), components=components)
    dbmtl = resolved.build_weighting(resolved.build_tasks())
    assert (dbmtl.beta, dbmtl.beta_sigma, dbmtl.grad_space) == (0.9, 0.0, "features")
    resolved = load_spec(spec("gradnorm"), components=components)
    assert resolved.build_weighting(resolved.build_tasks()).alpha == 1.5


@pytest.mark.parametrize("weighting", ["rlw", "gls", "famo", "gradnorm", {"name": "dbmtl", "grad_space": "params"}])
def test_trains_through_the_engine(components, faces, tmp_path, weighting):
    raw = tiny_spec(faces, epochs=1)
    raw["weighting"] = weighting
    run = hydranet.train(load_spec(raw, components=components), out_dir=tmp_path, components=components,
                         progress=False, echo=False)
    last = run.history[-1]
    losses = [last[f"train_loss.{n}"] for n in ("age", "gender", "ethnicity")]
    weights = [last[f"weight.{n}"] for n in ("age", "gender", "ethnicity")]
    assert all(math.isfinite(v) for v in losses + weights)
    checkpoint = torch.load(run.run_dir / "last.pt", weights_only=True)
    name = weighting if isinstance(weighting, str) else weighting["name"]
    fresh = make(components, name, ("age", "gender", "ethnicity"),
                 **({} if isinstance(weighting, str) else {k: v for k, v in weighting.items() if k != "name"}))
    fresh.load_state_dict(checkpoint["weighting"])  # the checkpoint restores the strategy's state...
    # ...which training moved away from where it starts
    assert fresh.weights().tolist() != make(components, name, ("age", "gender", "ethnicity")).weights().tolist()


@pytest.mark.parametrize("epochs, warned", [(2, True), (3, False)])
def test_a_dwa_run_too_short_to_adapt_says_it_trains_as_sum(faces, tmp_path, components, epochs, warned):
    # DWA's weights stay 1 until two epochs have ended: a 2-epoch comparison against sum would show Δm 0
    spec = load_spec({**tiny_spec(faces, epochs=epochs), "weighting": "dwa"}, components=components)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    log = (tmp_path / "run" / "train.log").read_text()
    warning = ("warning: weighting 'dwa' weights every task 1 for its first 2 epochs, so this run of 2 epochs "
               "trains exactly as weighting 'sum' would; train more epochs (train.epochs > 2) to see it adapt")
    assert (warning in log) is warned
    assert ("weighting 'dwa' weights every task 1" in log) is warned  # and not in another wording
