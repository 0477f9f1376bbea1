"""A weighting that breaks its contract without raising is named, with its plugin, instead of training wrongly.

Two such faults used to pass: a `combine` whose result is not finite while
every task's loss is (blamed on the data, "check those tasks' labels"), and a
`backward` that computes no gradient (the run trained nothing, silently).
tests/test_weighting_author.py covers the faults that raise or return the
wrong shape; its `train` helper registers the weighting as 'mine' from
plugin 'w-plugin'.
"""

from __future__ import annotations

import math

import pytest
import torch

import hydranet
from hydranet.core.errors import TrainingError
from hydranet.core.interfaces import Weighting
from hydranet.core.weighting import WeightedSum
from test_weighting_author import PLUGIN, NaNWeights, train


class NaNCombine(Weighting):
    """Finite weights, a NaN combined loss."""

    def combine(self, losses):
        return (losses * self.weights()).sum() * math.nan

    def weights(self):
        return torch.ones(self.num_tasks)


class NaNAtStep3(WeightedSum):
    """A plain sum until its third step, whose combined loss is infinite (a step count in a Python int)."""

    def __init__(self, tasks):
        super().__init__(tasks)
        self.steps = 0

    def multipliers(self):
        return torch.ones(self.num_tasks)

    def combine(self, losses):
        self.steps += 1
        total = super().combine(losses)
        return total * math.inf if self.steps == 3 else total


@pytest.mark.parametrize("strategy, step, log_every", [(NaNCombine, 1, 1), (NaNAtStep3, 3, 4), (NaNAtStep3, 3, 50)])
def test_a_non_finite_combined_loss_is_blamed_on_the_weighting_not_the_labels(faces, tmp_path, strategy, step,
                                                                               log_every):
    with pytest.raises(TrainingError) as caught:
        train(faces, strategy, tmp_path, log_every=log_every)
    message = str(caught.value)
    assert f"{PLUGIN} returned a non-finite combined loss at epoch 1, step {step}, while every loss was finite" \
        in message, message
    assert "Fix the weighting (its combine, or the loss its backward returns, must stay finite)" in message
    assert "labels" not in message and "train.lr" not in message


def test_non_finite_weights_are_still_named_as_the_weights_when_checked_at_that_very_step(faces, tmp_path):
    """NaN multipliers make the combined loss NaN at the same step: the weights are the more telling fault."""
    with pytest.raises(TrainingError) as caught:
        train(faces, NaNWeights, tmp_path, log_every=1)
    assert f"{PLUGIN} returned non-finite weights at epoch 1, step 1, while every loss was finite." in str(caught.value)


class Ones(WeightedSum):
    def multipliers(self):
        return torch.ones(self.num_tasks)


def test_a_rate_too_high_is_still_blamed_on_the_rate(faces, tmp_path):
    """Non-finite task losses make the combined loss non-finite too: not the weighting's fault, said as before."""
    with pytest.raises(TrainingError) as caught:
        train(faces, Ones, tmp_path, lr=1e30)
    message = str(caught.value)
    assert "non-finite loss for task" in message and "Try a lower train.lr" in message, message
    assert "combined" not in message


class NoBackward(WeightedSum):
    """Overrides backward and forgets to run it."""

    def multipliers(self):
        return torch.ones(self.num_tasks)

    def backward(self, losses, context=None):
        pass


class DetachedBackward(WeightedSum):
    """Runs a backward, but of a detached copy: no parameter of the model gets a gradient."""

    def multipliers(self):
        return torch.ones(self.num_tasks)

    def backward(self, losses, context=None):
        total = (losses.detach().requires_grad_() * self.multipliers()).sum()
        total.backward()
        return total.detach()


@pytest.mark.parametrize("strategy", [NoBackward, DetachedBackward])
def test_a_backward_that_computes_no_gradient_stops_the_run_naming_the_weighting(faces, tmp_path, strategy):
    with pytest.raises(TrainingError) as caught:
        train(faces, strategy, tmp_path)
    message = str(caught.value)
    assert f"the backward of {PLUGIN} gave none of the model's" in message, message
    assert "trainable parameters a gradient at epoch 1, step 1 (the run's first update)" in message
    assert "must call .backward() on the combined loss" in message and "set .grad" in message


class OwnGradients(WeightedSum):
    """Writes the model's gradients itself (`.grad`), as a gradient method may, without calling .backward()."""

    needs_features = False

    def multipliers(self):
        return torch.ones(self.num_tasks)

    def backward(self, losses, context=None):
        parameters = [*context.shared_parameters, *context.head_parameters]
        for parameter, grad in zip(parameters, torch.autograd.grad(losses.sum(), parameters, allow_unused=True)):
            parameter.grad = grad
        return losses.sum().detach()


def test_a_backward_that_sets_grad_itself_trains(faces, tmp_path):
    train(faces, OwnGradients, tmp_path)
    assert (tmp_path / "run" / "last.pt").is_file()


class NaNReportedWeights(Weighting):
    """A finite plain-sum update whose reported weights are NaN: nothing the update uses is damaged."""

    def combine(self, losses):
        return losses.sum()

    def weights(self):
        return torch.full((self.num_tasks,), math.nan)


def test_non_finite_weights_that_damage_no_update_do_not_stop_the_run(faces, tmp_path):
    """Only logged (metrics.csv's weight columns), they harm nothing: the run trains to its end, as it did before
    the combined loss was checked."""
    train(faces, NaNReportedWeights, tmp_path, log_every=1)
    assert (tmp_path / "run" / "summary.json").is_file()


class Halves(Weighting):
    """A weighting on the bare base class, as a plugin author may write one: its own combine and epoch_end."""

    def __init__(self, tasks):
        super().__init__(tasks)
        self.seen = []

    def combine(self, losses):
        return (0.5 * losses).sum()

    def weights(self):
        return torch.full((self.num_tasks,), 0.5)

    def epoch_end(self, mean_losses):
        self.seen.append(mean_losses)


class Named:
    def __init__(self, name):
        self.name, self.problem = name, "regression"


@pytest.mark.parametrize("losses, got", [
    ([torch.tensor(1.0), torch.tensor(2.0)], "got a list of 2 tensors; stack them: torch.stack(losses)"),
    (torch.ones(2, 1), "got shape (2, 1)"),  # would broadcast into a plausible sum of 2.0 x 1
    (torch.ones(4, 2), "got shape (4, 2)"),
])
def test_a_weighting_on_the_bare_base_class_checks_its_losses_in_every_method(losses, got):
    weighting = Halves([Named("age"), Named("gender")])
    for call, method in ((weighting.combine, "combine"), (weighting.backward, "backward"),
                         (weighting.epoch_end, "epoch_end")):
        with pytest.raises(Exception) as caught:
            call(losses)
        assert f"Halves.{method} expects" in str(caught.value) and "for tasks age, gender" in str(caught.value)
        assert got in str(caught.value)
    assert weighting.seen == []
    right = torch.tensor([1.0, 3.0], requires_grad=True)
    assert weighting.backward(right).item() == 2.0 and right.grad.tolist() == [0.5, 0.5]


def test_a_weighting_s_own_methods_take_their_losses_by_keyword_as_their_signatures_name_them():
    """`epoch_end(mean_losses=...)`, as the documented signature names it, reaches a weighting that overrides it
    (dwa), and a wrong shape given so is still named; the check does not rename the argument."""
    dwa = hydranet.weighting("dwa", ["age", "gender"])
    dwa.epoch_end(mean_losses=torch.tensor([1.0, 2.0]))
    weighting = Halves([Named("age"), Named("gender")])
    weighting.epoch_end(mean_losses=torch.tensor([1.0, 2.0]))
    assert weighting.combine(losses=torch.tensor([1.0, 3.0])).item() == 2.0
    with pytest.raises(hydranet.InputError, match=r"Halves.epoch_end expects .* got shape \(2, 1\)"):
        weighting.epoch_end(mean_losses=torch.ones(2, 1))
