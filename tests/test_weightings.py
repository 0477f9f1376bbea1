"""The built-in weightings (sum, static, uncertainty, dwa) against hand-computed values.

Every expected number below is worked out by hand from the paper's formula in
the comment next to it; the code under test is only ever asked, never used to
produce an expectation.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_tasks
from hydranet.core.errors import ComponentError, SpecError
from hydranet.core.plugins import BUILTIN_PLUGINS, Components, load_components, make_plugin_manager
from hydranet.core.weighting import WeightedSum

STRATEGIES = ("sum", "static", "uncertainty", "dwa")
LN2 = math.log(2.0)

# Built-in tasks plus the four weightings, loaded through the real plugin
# manager. Taken from BUILTIN_PLUGINS, so a module missing from that tuple
# fails these tests; other built-ins (datasets, backbones) are left out so
# these tests do not depend on them.
WEIGHTING_PLUGINS = tuple(m for m in BUILTIN_PLUGINS if m.startswith(("hydranet.tasks.", "hydranet.plugins.weighting.")))


@pytest.fixture(scope="module")
def components() -> Components:
    return load_components(make_plugin_manager(builtins=WEIGHTING_PLUGINS, entry_points=False))


def make_weighting(components: Components, name: str, task_names: tuple[str, ...] = ("age", "gender"), **params):
    entry = components.weightings.get(name)
    return entry.factory(make_tasks(components, *task_names), entry.validate_params(params))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- registration


def test_every_strategy_is_a_weighted_sum_citing_its_paper(components):
    """(Registration, description and reference: test_weighting_suite, for every built-in.)"""
    assert components.pm.load_errors() == []
    assert all(issubclass(components.weightings.get(name).factory, WeightedSum) for name in STRATEGIES)
    assert "Kendall" in components.weightings.get("uncertainty").factory.reference
    assert "Liu" in components.weightings.get("dwa").factory.reference


def test_real_tasks_carry_the_problem_the_weightings_read(components):
    age, gender, ethnicity = make_tasks(components, "age", "gender", "ethnicity")
    assert (age.problem, gender.problem, ethnicity.problem) == ("regression", "classification", "classification")


# ---------------------------------------------------------------- sum


def test_sum_is_the_plain_sum(components):
    w = make_weighting(components, "sum", ("age", "gender", "ethnicity"))
    # L = 2.0 + 1.0 + 0.5 = 3.5, weights all 1
    assert w.combine(t(2.0, 1.0, 0.5)).item() == pytest.approx(3.5)
    assert w.weights().tolist() == [1.0, 1.0, 1.0]


def test_sum_rejects_parameters(components):
    with pytest.raises(ComponentError) as info:
        components.weightings.get("sum").validate_params({"temperature": 2})
    assert info.value.field == "temperature"


# ---------------------------------------------------------------- static


def test_static_weights_with_default(components):
    w = make_weighting(components, "static", ("age", "gender", "ethnicity"),
                       weights={"age": 0.1, "ethnicity": 2.0}, default=0.5)
    # named: age 0.1, ethnicity 2.0; gender unnamed -> default 0.5
    assert w.weights().tolist() == pytest.approx([0.1, 0.5, 2.0])
    # 0.1*10 + 0.5*0.6 + 2.0*1.5 = 1.0 + 0.3 + 3.0 = 4.3
    assert w.combine(t(10.0, 0.6, 1.5)).item() == pytest.approx(4.3)


def test_static_default_default_is_one(components):
    w = make_weighting(components, "static", weights={"gender": 3.0})
    # age unnamed -> 1.0; 1*2 + 3*1 = 5
    assert w.weights().tolist() == [1.0, 3.0]
    assert w.combine(t(2.0, 1.0)).item() == pytest.approx(5.0)


def test_static_unknown_task_names_the_field_and_suggests(components):
    with pytest.raises(ComponentError) as info:
        make_weighting(components, "static", weights={"agee": 2.0})
    assert str(info.value) == "unknown task 'agee' in weights; did you mean 'age'? tasks: age, gender"
    assert info.value.field == "weights.agee"


def test_static_rejects_negative_and_all_zero_weights(components):
    from pydantic import ValidationError

    entry = components.weightings.get("static")
    with pytest.raises(ValidationError) as info:
        entry.validate_params({"weights": {"age": -1.0}})
    assert info.value.errors()[0]["loc"] == ("weights", "age")
    with pytest.raises(ValidationError):
        entry.validate_params({"default": float("nan")})
    with pytest.raises(ComponentError, match="nothing would train"):
        make_weighting(components, "static", weights={"age": 0.0, "gender": 0.0})
    # one zero weight is fine: that task no longer drives the shared backbone
    assert make_weighting(components, "static", weights={"age": 0.0}).weights().tolist() == [0.0, 1.0]


# ---------------------------------------------------------------- uncertainty
# Kendall et al. 2018, s = log sigma^2:
#   regression      0.5 exp(-s) L + 0.5 s      d/ds = -0.5 exp(-s) L + 0.5
#   classification      exp(-s) L + 0.5 s      d/ds =     -exp(-s) L + 0.5


def test_uncertainty_at_zero_log_variance(components):
    w = make_weighting(components, "uncertainty")  # age (regression), gender (classification)
    losses = t(3.0, 1.0)
    total = w.combine(losses)
    # s = 0: 0.5*1*3 + 0 + 1*1*1 + 0 = 1.5 + 1.0 = 2.5
    assert total.item() == pytest.approx(2.5)
    assert w.weights().tolist() == [0.5, 1.0]
    total.backward()
    # d/ds: age -0.5*1*3 + 0.5 = -1.0; gender -1*1 + 0.5 = -0.5
    assert w.log_var.grad.tolist() == pytest.approx([-1.0, -0.5])


def test_uncertainty_at_nonzero_log_variance_value_and_gradients(components):
    w = make_weighting(components, "uncertainty")
    with torch.no_grad():
        w.log_var.copy_(t(LN2, -LN2))  # exp(-s) = [0.5, 2.0]
    losses = t(3.0, 1.0).requires_grad_()
    total = w.combine(losses)
    # age:    0.5*0.5*3 + 0.5*ln2 = 0.75 + 0.34657359
    # gender: 2.0*1     - 0.5*ln2 = 2.0  - 0.34657359      total = 2.75 (the ln2 terms cancel)
    assert total.item() == pytest.approx(2.75)
    assert w.weights().tolist() == pytest.approx([0.25, 2.0])  # 0.5*0.5, 1*2
    total.backward()
    # d/ds: age -0.5*0.5*3 + 0.5 = -0.25; gender -2*1 + 0.5 = -1.5
    assert w.log_var.grad.tolist() == pytest.approx([-0.25, -1.5])
    # the model's losses are scaled by the multipliers: d total / d L = [0.25, 2.0]
    assert losses.grad.tolist() == pytest.approx([0.25, 2.0])


def test_uncertainty_gradient_matches_closed_form_at_random_points(components):
    w = make_weighting(components, "uncertainty", ("age", "gender", "ethnicity"))
    generator = torch.Generator().manual_seed(0)
    s = torch.randn(3, generator=generator)
    losses = torch.rand(3, generator=generator) * 4
    with torch.no_grad():
        w.log_var.copy_(s)
    w.combine(losses).backward()
    coefficient = torch.tensor([0.5, 1.0, 1.0])  # regression, classification, classification
    expected = -coefficient * torch.exp(-s) * losses + 0.5
    torch.testing.assert_close(w.log_var.grad, expected)


def test_uncertainty_form_follows_the_task_problem(components):
    # the same loss 2.0 at s = 0: regression 0.5*2 = 1.0, classification 1*2 = 2.0
    regression = make_weighting(components, "uncertainty", ("age",))
    classification = make_weighting(components, "uncertainty", ("ethnicity",))
    assert regression.combine(t(2.0)).item() == pytest.approx(1.0)
    assert classification.combine(t(2.0)).item() == pytest.approx(2.0)
    # a kind-built task is read the same way as a preset one
    entry = components.tasks.get("binary")
    smiling = entry.factory("smiling", entry.validate_params({"label": "smile"}))
    w = components.weightings.get("uncertainty").factory([smiling], None)
    assert w.weights().tolist() == [1.0]


def test_uncertainty_init_param(components):
    w = make_weighting(components, "uncertainty", init=1.0)
    # s = 1: weights 0.5 e^-1 = 0.18393972, e^-1 = 0.36787944
    assert w.log_var.tolist() == [1.0, 1.0]
    assert w.weights().tolist() == pytest.approx([0.18393972, 0.36787944])
    assert isinstance(w.log_var, torch.nn.Parameter)
    assert [name for name, _ in w.named_parameters()] == ["log_var"]


# ---------------------------------------------------------------- dwa
# Liu et al. 2019: w_i(t) = K exp(r_i/T) / sum_j exp(r_j/T), r_i = L_i(t-1) / L_i(t-2);
# w = 1 for t = 1, 2. For K = 2 that is w_1 = 2 / (1 + exp((r_2 - r_1)/T)), w_2 = 2 - w_1.


def test_dwa_paper_schedule(components):
    w = make_weighting(components, "dwa", temperature=2.0)
    assert w.weights().tolist() == [1.0, 1.0]  # epoch 1: no history
    w.epoch_end(t(2.0, 1.0))  # L(1)
    assert w.weights().tolist() == [1.0, 1.0]  # epoch 2: one epoch of history is not a ratio yet
    w.epoch_end(t(1.0, 1.0))  # L(2)
    # epoch 3: r = L(2)/L(1) = [0.5, 1.0]; (r_2 - r_1)/T = 0.25
    #   w_1 = 2/(1 + e^0.25) = 2/2.28402542 = 0.87564700, w_2 = 1.12435300
    assert w.weights().tolist() == pytest.approx([0.87564700, 1.12435300])
    assert w.combine(t(1.0, 2.0)).item() == pytest.approx(0.87564700 + 2 * 1.12435300)
    w.epoch_end(t(0.5, 0.8))  # L(3)
    # epoch 4: r = L(3)/L(2) = [0.5, 0.8]; (0.8 - 0.5)/2 = 0.15
    #   w_1 = 2/(1 + e^0.15) = 2/2.16183424 = 0.92514031, w_2 = 1.07485969
    assert w.weights().tolist() == pytest.approx([0.92514031, 1.07485969])


def test_dwa_temperature(components):
    def after_history(temperature: float) -> list[float]:
        w = make_weighting(components, "dwa", temperature=temperature)
        w.epoch_end(t(2.0, 1.0))
        w.epoch_end(t(1.0, 1.0))  # r = [0.5, 1.0]
        return w.weights().tolist()

    # T = 1: w_1 = 2/(1 + e^0.5) = 2/2.64872127 = 0.75508134
    assert after_history(1.0) == pytest.approx([0.75508134, 1.24491866])
    # larger T pulls the weights towards 1
    gaps = [abs(after_history(T)[0] - 1.0) for T in (0.5, 1.0, 2.0, 10.0, 1000.0)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3
    with pytest.raises(Exception):
        components.weightings.get("dwa").validate_params({"temperature": 0})


def test_dwa_weights_sum_to_k_and_survive_a_zero_loss(components):
    w = make_weighting(components, "dwa", ("age", "gender", "ethnicity"))
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        w.epoch_end(torch.rand(3, generator=generator) * 3)
        assert w.weights().sum().item() == pytest.approx(3.0)
    # a task whose previous epoch loss was exactly 0: the ratio stays finite
    w.epoch_end(t(0.0, 1.0, 1.0))
    w.epoch_end(t(0.0, 1.0, 1.0))  # r = [0/eps = 0, 1, 1]
    assert torch.isfinite(w.weights()).all()
    # 3 e^0 / (e^0 + 2 e^0.5) = 3 / (1 + 2*1.64872127) = 3 / 4.29744254 = 0.69808961
    assert w.weights()[0].item() == pytest.approx(0.69808961)
    w.epoch_end(t(1.0, 1.0, 1.0))  # r = [1/eps, 1, 1]: all weight to the first task, still finite
    assert w.weights().tolist() == pytest.approx([3.0, 0.0, 0.0])


def test_dwa_history_is_in_buffers(components):
    w = make_weighting(components, "dwa")
    assert list(w.parameters()) == []
    w.epoch_end(t(2.0, 1.0))
    w.epoch_end(t(1.0, 1.0))
    assert w.history.tolist() == [[2.0, 1.0], [1.0, 1.0]]
    assert w.epochs_seen.item() == 2


# ---------------------------------------------------------------- the contract, for every strategy


@pytest.mark.parametrize("name", STRATEGIES)
def test_weights_shape_and_detached(components, name):
    w = make_weighting(components, name, ("age", "gender", "ethnicity"))
    weights = w.weights()
    assert weights.shape == (3,)
    assert not weights.requires_grad and weights.grad_fn is None
    assert weights.dtype == torch.float32


@pytest.mark.parametrize("name", STRATEGIES)
def test_no_host_synchronisation(components, name):
    # Meta tensors have no values: any .item(), float(), .tolist() or Python `if`
    # on a tensor raises. Running every call on them proves none happens, the
    # CPU stand-in for "a whole epoch runs on a GPU without waiting".
    w = make_weighting(components, name, ("age", "gender", "ethnicity")).to("meta")
    losses = torch.ones(3, device="meta", requires_grad=True)
    for _ in range(3):
        assert w.combine(losses).device.type == "meta"
        assert w.weights().device.type == "meta"  # buffers (persistent or not) moved with .to()
        w.epoch_end(torch.ones(3, device="meta"))


@pytest.mark.parametrize("name", STRATEGIES)
def test_combine_rejects_a_wrong_shape(components, name):
    w = make_weighting(components, name)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        w.combine(torch.ones(2, 1))


def test_state_dict_round_trip(components):
    dwa = make_weighting(components, "dwa")
    for losses in ((2.0, 1.0), (1.0, 1.0), (0.5, 0.8)):
        dwa.epoch_end(t(*losses))
    restored = make_weighting(components, "dwa")
    restored.load_state_dict(dwa.state_dict())
    assert restored.epochs_seen.item() == 3
    assert restored.weights().tolist() == pytest.approx([0.92514031, 1.07485969])  # epoch 4 above

    uncertainty = make_weighting(components, "uncertainty")
    with torch.no_grad():
        uncertainty.log_var.copy_(t(LN2, -LN2))
    fresh = make_weighting(components, "uncertainty")
    fresh.load_state_dict(uncertainty.state_dict())
    assert fresh.log_var.tolist() == pytest.approx([LN2, -LN2])
    assert fresh.weights().tolist() == pytest.approx([0.25, 2.0])

    # what a checkpoint holds: learned state only, never configuration
    assert set(dwa.state_dict()) == {"history", "epochs_seen"}
    assert set(uncertainty.state_dict()) == {"log_var"}
    assert dict(make_weighting(components, "sum").state_dict()) == {}
    assert dict(make_weighting(components, "static", weights={"age": 2.0}).state_dict()) == {}


# ---------------------------------------------------------------- through a spec


def spec(weighting: dict) -> dict:
    return {"tasks": ["age", "gender"], "data": {"name": "utkface", "root": "x"}, "backbone": "tiny",
            "weighting": weighting}


@pytest.fixture(scope="module")
def all_components() -> Components:
    return load_components(make_plugin_manager(entry_points=False))


def test_spec_reports_an_unknown_static_task(all_components):
    from hydranet.core.spec import load_spec

    with pytest.raises(SpecError) as info:
        load_spec(spec({"name": "static", "weights": {"agee": 2}}), components=all_components)
    # the only problem in this spec is the weighting's
    assert info.value.problems == [
        ("weighting.weights.agee", "unknown task 'agee' in weights; did you mean 'age'? tasks: age, gender")]
    assert "weighting.weights.agee" in str(info.value) and "did you mean 'age'" in str(info.value)


@pytest.mark.parametrize(("weighting", "path"), [
    ({"name": "static", "weights": {"age": -1}}, "weighting.weights.age"),
    ({"name": "dwa", "temperature": 0}, "weighting.temperature"),
    ({"name": "dwa", "temprature": 1}, "weighting.temprature"),
    ({"name": "sum", "weights": {"age": 1}}, "weighting.weights"),
])
def test_spec_reports_bad_weighting_params(all_components, weighting, path):
    from hydranet.core.spec import load_spec

    with pytest.raises(SpecError) as info:
        load_spec(spec(weighting), components=all_components)
    assert [p for p, _ in info.value.problems] == [path]


def test_spec_builds_the_weighting(all_components):
    from hydranet.core.spec import load_spec

    resolved = load_spec(spec({"name": "dwa", "temperature": 1.5}), components=all_components)
    weighting = resolved.build_weighting(resolved.build_tasks())
    assert weighting.temperature == 1.5 and weighting.task_names == ["age", "gender"]
    assert resolved.to_dict()["weighting"] == {"name": "dwa", "temperature": 1.5}
