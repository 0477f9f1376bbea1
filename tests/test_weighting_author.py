"""What a researcher writing a weighting plugin runs into: each contract mistake is named, with its plugin.

Each test builds a small weighting that breaks one rule of `docs/plugins/weighting.md` (state kept in a
plain tensor attribute, multipliers or a combined gradient of the wrong shape, an exception in its
backward, a forgotten `weights()`, non-finite weights) and checks that the error names the weighting, its
plugin and the fix, instead of a torch traceback or advice about the data. The last tests check built-in
strategies against numbers computed by hand from their papers' formulas.
"""

from __future__ import annotations

import math

import pytest
import torch

import hydranet
from conftest import make_tasks, tiny_spec, with_weighting
from hydranet.core.errors import SpecError, TrainingError
from hydranet.core.interfaces import StepContext
from hydranet.core.plugins import load_components, make_plugin_manager
from hydranet.core.spec import load_spec
from hydranet.core.weighting import GradientWeighting, WeightedSum

PLUGIN = "weighting 'mine' from plugin 'w-plugin' (test 0)"


def train(faces, strategy: type, tmp_path, **train_settings) -> None:
    """One tiny epoch with `strategy` registered as weighting 'mine' by plugin 'w-plugin'."""
    components = with_weighting("mine", strategy, plugin="w-plugin")
    spec = load_spec({**tiny_spec(faces, epochs=1, **train_settings), "weighting": "mine"}, components=components)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)


@pytest.fixture(scope="module")
def tasks():
    return make_tasks(load_components(make_plugin_manager(entry_points=False)), "age", "gender", "ethnicity")


# ---------------------------------------------------------------- state outside the module's state


class PlainTensorState(WeightedSum):
    """Keeps its running loss scale in a plain attribute: not saved, not moved to the device."""

    def __init__(self, tasks, params=None):
        super().__init__(tasks)
        self.scale = torch.ones(self.num_tasks)

    def multipliers(self):
        return 1.0 / self.scale


def test_tensor_state_outside_buffers_is_a_spec_problem(faces):
    components = with_weighting("mine", PlainTensorState, plugin="w-plugin")
    with pytest.raises(SpecError) as caught:
        load_spec({**tiny_spec(faces), "weighting": "mine"}, components=components)
    message = str(caught.value)
    assert f"weighting: {PLUGIN} keeps the tensor attribute 'scale' outside its state" in message
    assert "self.register_buffer('scale', tensor)" in message


# ---------------------------------------------------------------- shapes


class ShortMultipliers(WeightedSum):
    def multipliers(self):
        return torch.ones(self.num_tasks - 1)


def test_multipliers_of_the_wrong_length_are_named_with_the_plugin(faces, tmp_path):
    with pytest.raises(TrainingError) as caught:
        train(faces, ShortMultipliers, tmp_path)
    assert f"the multipliers() of {PLUGIN} returned shape (2,) for 3 tasks; expected (3,)" in str(caught.value)


class OneMultiplier(WeightedSum):
    def multipliers(self):
        return torch.ones(1)


def test_a_single_multiplier_does_not_broadcast_silently(tasks):
    """A (1,) vector would broadcast over the losses into a plausible sum; it is refused, on the shape alone."""
    with pytest.raises(TrainingError, match=r"returned shape \(1,\) for 3 tasks; expected \(3,\)"):
        OneMultiplier(tasks).combine(torch.ones(3, device="meta"))


class RowsNotSummed(GradientWeighting):
    """Returns the (K, D) Jacobian itself instead of one (D,) gradient."""

    def aggregate(self, jacobian):
        return jacobian


@pytest.mark.parametrize("space", ["features", "params"])
def test_an_aggregate_of_the_wrong_shape_is_named(tasks, space):
    weighting = RowsNotSummed(tasks, grad_space=space)
    shared = torch.nn.Parameter(torch.randn(4, 5))
    features = torch.randn(2, 4) @ shared
    losses = torch.stack([features.sum(), features.pow(2).sum(), features.mean()])
    context = StepContext(features=features, shared_parameters=[shared], head_parameters=[],
                          last_shared_parameters=[shared])
    with pytest.raises(TrainingError) as caught:
        weighting.backward(losses, context)
    d = 10 if space == "features" else 20
    assert (f"the aggregate() of weighting from class test_weighting_author.RowsNotSummed returned shape (3, {d}) "
            f"for a (3, {d}) Jacobian; expected ({d},)") in str(caught.value)


# ---------------------------------------------------------------- exceptions in the weighting's own code


class RaisesInBackward(WeightedSum):
    def multipliers(self):
        return torch.ones(self.num_tasks)

    def backward(self, losses, context=None):
        raise KeyError("no such task")


class ForgetsWeights(hydranet.Weighting):
    def combine(self, losses):
        return losses.sum()


class ReadsFeaturesUndeclared(hydranet.Weighting):
    """Asks for the gradients w.r.t. the shared features without `needs_features = True`."""

    def backward(self, losses, context=None):
        torch.autograd.grad(losses[0], context.features, retain_graph=True)
        return super().backward(losses, context)

    def combine(self, losses):
        return losses.sum()

    def weights(self):
        return torch.ones(self.num_tasks)


@pytest.mark.parametrize("strategy, said", [
    (RaisesInBackward, f"the backward of {PLUGIN} raised KeyError: 'no such task'"),
    (ForgetsWeights, f"the weights() of {PLUGIN} raised NotImplementedError"),
    (ReadsFeaturesUndeclared, "set needs_features = True"),
])
def test_an_exception_in_the_weightings_code_names_it(faces, tmp_path, strategy, said):
    with pytest.raises(TrainingError) as caught:
        train(faces, strategy, tmp_path)
    assert said in str(caught.value)


# ---------------------------------------------------------------- non-finite weights


class NaNWeights(WeightedSum):
    def multipliers(self):
        return torch.full((self.num_tasks,), math.nan)


def test_non_finite_weights_are_blamed_on_the_weighting_not_the_labels(faces, tmp_path):
    with pytest.raises(TrainingError) as caught:
        train(faces, NaNWeights, tmp_path)
    message = str(caught.value)
    assert f"{PLUGIN} returned non-finite weights at epoch 1, step 1, while every loss was finite" in message
    assert "check those tasks' labels" not in message


# ---------------------------------------------------------------- built-ins against their papers, end to end


def test_dwa_weights_logged_in_epoch_3_follow_the_papers_formula_from_the_logged_losses(faces, tmp_path):
    """Liu et al. 2019, eq. 7: w_i(3) = K exp(r_i / T) / sum_j exp(r_j / T), r_i = L_i(2) / L_i(1), T = 2,
    with L_i(t) task i's mean training loss over epoch t: what metrics.csv logs as train_loss.<task>."""
    import csv

    from hydranet.core.plugins import load_components, make_plugin_manager

    components = load_components(make_plugin_manager(entry_points=False))
    spec = load_spec({**tiny_spec(faces, epochs=3), "weighting": "dwa"}, components=components)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    names = ["age", "gender", "ethnicity"]
    for epoch in (0, 1):
        assert [float(rows[epoch][f"weight.{t}"]) for t in names] == [1.0, 1.0, 1.0]
    ratios = [float(rows[1][f"train_loss.{t}"]) / float(rows[0][f"train_loss.{t}"]) for t in names]
    exps = [math.exp(r / 2.0) for r in ratios]
    expected = [3 * e / sum(exps) for e in exps]
    assert [float(rows[2][f"weight.{t}"]) for t in names] == pytest.approx(expected, rel=1e-5)
