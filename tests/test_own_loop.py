"""A hydranet weighting in a training loop of one's own: `hydranet.weighting`, `hydranet.StepContext`.

A tiny model of the test's own (not a HydraNet) trains through the public path with a loss-based weighting,
uncertainty (its log-variances in the optimizer), a gradient weighting in features space and one in params
space; and each misuse of the loop (a list of losses, the wrong shape, features the losses were not computed
from, ...) gets hydranet's message rather than an error deep inside torch.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hydranet

TASKS = ["reg", "cls"]
PROBLEMS = {"reg": "regression", "cls": "classification"}


class Net(nn.Module):
    """A shared part and two heads: regression (1 output) and 3-class classification."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.reg = nn.Linear(16, 1)
        self.cls = nn.Linear(16, 3)

    def losses(self, x: torch.Tensor, y_reg: torch.Tensor, y_cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.shared(x)
        losses = torch.stack([F.mse_loss(self.reg(features).squeeze(-1), y_reg),
                              F.cross_entropy(self.cls(features), y_cls)])
        return losses, features

    def context(self, features: torch.Tensor | None) -> hydranet.StepContext:
        return hydranet.StepContext(features=features, shared_parameters=list(self.shared.parameters()),
                                    head_parameters=[*self.reg.parameters(), *self.cls.parameters()],
                                    last_shared_parameters=list(self.shared[0].parameters()))


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=generator)
    return x, x[:, 0] - 0.5 * x[:, 1], (x[:, 2] > 0).long() + (x[:, 3] > 1).long()


def train(weighting: hydranet.Weighting, steps: int = 30, lr: float = 0.1) -> tuple[Net, list[float]]:
    """`steps` steps of the loop the guide shows; returns the model and the plain sum of the losses per step."""
    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.SGD([*net.parameters(), *weighting.parameters()], lr=lr)
    x, y_reg, y_cls = data()
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        losses, features = net.losses(x, y_reg, y_cls)
        weighting.backward(losses, net.context(features))
        optimizer.step()
        history.append(float(losses.detach().sum()))
    return net, history


def test_weighting_is_public_and_step_context_is_lazy():
    assert "weighting" in hydranet.__all__ and "StepContext" not in hydranet.__all__
    assert "StepContext" in dir(hydranet)
    from hydranet.core.interfaces import StepContext

    assert hydranet.StepContext is StepContext
    assert isinstance(hydranet.weighting("sum", TASKS), hydranet.Weighting)


def test_sum_trains_with_weights_of_one():
    weighting = hydranet.weighting("sum", TASKS)
    _, history = train(weighting)
    assert history[-1] < 0.8 * history[0]
    assert weighting.weights().tolist() == [1.0, 1.0]


def test_static_applies_the_given_weights():
    weighting = hydranet.weighting("static", TASKS, weights={"reg": 2.0, "cls": 0.5})
    assert weighting.weights().tolist() == [2.0, 0.5]
    _, history = train(weighting)
    assert history[-1] < history[0]


def test_dwa_weights_after_two_epochs_are_the_papers_formula():
    weighting = hydranet.weighting("dwa", TASKS, temperature=2.0)
    first, second = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.8])
    weighting.epoch_end(first)
    assert weighting.weights().tolist() == [1.0, 1.0]  # one epoch: no loss ratio yet
    weighting.epoch_end(second)
    ratios = [0.5 / 1.0, 1.8 / 2.0]
    exps = [math.exp(r / 2.0) for r in ratios]
    expected = [2 * e / sum(exps) for e in exps]
    assert weighting.weights().tolist() == pytest.approx(expected)
    _, history = train(weighting)
    assert history[-1] < history[0]


def test_uncertainty_learns_its_log_variances_in_the_optimizer():
    weighting = hydranet.weighting("uncertainty", PROBLEMS)
    assert [name for name, _ in weighting.named_parameters()] == ["log_var"]
    assert weighting.weights().tolist() == [0.5, 1.0]  # exp(0) times the regression / classification factor
    net, history = train(weighting, steps=40)
    assert history[-1] < history[0]
    assert not torch.equal(weighting.log_var.detach(), torch.zeros(2))


def test_uncertainty_takes_task_objects_that_say_their_problem():
    tasks = hydranet.load_spec("demo").build_tasks()
    weighting = hydranet.weighting("uncertainty", tasks)
    assert weighting.task_names == [task.name for task in tasks]
    assert weighting.weights().tolist() == [0.5 if task.problem == "regression" else 1.0 for task in tasks]


@pytest.mark.parametrize("name, space", [("mgda", "features"), ("pcgrad", "params")])
def test_gradient_weightings_train_in_either_space(name, space):
    weighting = hydranet.weighting(name, TASKS, grad_space=space)
    assert weighting.grad_space == space
    net, history = train(weighting)
    assert history[-1] < 0.8 * history[0]
    weights = weighting.weights()
    assert weights.shape == (2,) and bool(torch.isfinite(weights).all())


# ---------------------------------------------------------------- building it wrong

def test_unknown_name_gets_the_registrys_did_you_mean():
    with pytest.raises(hydranet.HydranetError, match=r"unknown weighting 'pcgard'; did you mean 'pcgrad'\?"):
        hydranet.weighting("pcgard", TASKS)


def test_a_misspelt_parameter_gets_the_spec_wording():
    with pytest.raises(hydranet.SpecError) as caught:
        hydranet.weighting("dwa", TASKS, temprature=2.0)
    assert caught.value.problems == [("temprature", "unknown field; did you mean 'temperature'? valid fields: "
                                                    "temperature")]
    with pytest.raises(hydranet.SpecError, match=r"temperature: should be greater than 0"):
        hydranet.weighting("dwa", TASKS, temperature=-1)
    with pytest.raises(hydranet.SpecError, match=r"weights\.age: unknown task 'age' in weights"):
        hydranet.weighting("static", TASKS, weights={"age": 2.0})


def test_a_weighting_that_reads_the_problem_asks_for_it_by_name():
    with pytest.raises(hydranet.InputError, match=r"weighting 'uncertainty' reads each task's problem .*"
                                                  r"hydranet\.weighting\('uncertainty', \{'reg': 'regression'"):
        hydranet.weighting("uncertainty", TASKS)
    with pytest.raises(hydranet.InputError, match=r"'regresion' is not a problem; did you mean 'regression'\?"):
        hydranet.weighting("uncertainty", {"reg": "regresion", "cls": "classification"})
    assert hydranet.weighting("dwa", TASKS).task_names == TASKS  # one that does not read it needs no problems


@pytest.mark.parametrize("tasks, words", [("reg", "the task names"), ([], "at least one task"),
                                          (["reg", "reg"], "given twice"), ([3], r"tasks\[0\]")])
def test_tasks_it_cannot_use(tasks, words):
    with pytest.raises(hydranet.InputError, match=words):
        hydranet.weighting("sum", tasks)


# ---------------------------------------------------------------- misusing it in the loop

def shape_message(cls: str, method: str, got: str) -> str:
    return rf"{cls}\.{method} expects one loss per task, shape \(2,\) for tasks reg, cls; got {got}"


@pytest.mark.parametrize("name, cls", [("uncertainty", "Uncertainty"), ("mgda", "MGDA"), ("pcgrad", "PCGrad"),
                                       ("famo", "FAMO"), ("gls", "GeometricLoss")])
@pytest.mark.parametrize("make, got", [
    (lambda losses: [losses[0], losses[1]], r"a list of 2 tensors; stack them: torch\.stack\(losses\)"),
    (lambda losses: losses.sum(), r"shape \(\)"),
    (lambda losses: losses[:, None], r"shape \(2, 1\)"),
    (lambda losses: torch.cat([losses, losses[:1]]), r"shape \(3,\)"),
])
def test_losses_of_the_wrong_kind_get_the_message_of_the_method_called(name, cls, make, got):
    weighting = hydranet.weighting(name, PROBLEMS)
    net = Net()
    losses, features = net.losses(*data())
    with pytest.raises(hydranet.InputError, match=shape_message(cls, "backward", got)):  # the method called
        weighting.backward(make(losses), net.context(features))


@pytest.mark.parametrize("name", ["dwa", "uncertainty", "mgda"])
@pytest.mark.parametrize("given, got", [(torch.ones(3), r"shape \(3,\)"), ([1.0, 2.0], r"\[1\.0, 2\.0\] \(a list\)")])
def test_epoch_end_refuses_anything_but_one_mean_loss_per_task(name, given, got):
    weighting = hydranet.weighting(name, PROBLEMS)
    with pytest.raises(hydranet.InputError, match=r"\.epoch_end expects the epoch's mean loss of each task, "
                                                  rf"shape \(2,\) for tasks reg, cls; got {got}"):
        weighting.epoch_end(given)


def test_features_the_losses_were_not_computed_from():
    net, x = Net(), data()
    weighting = hydranet.weighting("mgda", TASKS, grad_space="features")
    losses, _ = net.losses(*x)
    recomputed = net.shared(x[0])  # the same values, but not the tensor the heads read
    with pytest.raises(hydranet.InputError, match=r"none of the 2 losses depends on context\.features: the losses "
                                                  r"were not computed from context\.features"):
        weighting.backward(losses, net.context(recomputed))
    losses, features = net.losses(*x)
    with pytest.raises(hydranet.InputError, match=r"context\.features carries no gradient"):
        weighting.backward(losses, net.context(features.detach()))
    losses, _ = net.losses(*x)
    with pytest.raises(hydranet.InputError, match=r"context\.features is None"):
        weighting.backward(losses, net.context(None))


def test_shared_parameters_the_losses_were_not_computed_from():
    net, other = Net(), nn.Linear(8, 16)
    weighting = hydranet.weighting("pcgrad", TASKS, grad_space="params")
    losses, features = net.losses(*data())
    context = hydranet.StepContext(features=features, shared_parameters=list(other.parameters()),
                                   head_parameters=[*net.reg.parameters(), *net.cls.parameters()],
                                   last_shared_parameters=list(other.parameters()))
    with pytest.raises(hydranet.InputError, match=r"the losses were not computed from the shared parameters given"):
        weighting.backward(losses, context)


def test_a_gradient_weighting_without_the_step_context():
    net = Net()
    losses, _ = net.losses(*data())
    with pytest.raises(hydranet.InputError, match=r"MGDA\.backward needs the step context, a hydranet\.StepContext"):
        hydranet.weighting("mgda", TASKS).backward(losses)
