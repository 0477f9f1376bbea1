"""The built-in task kinds on imbalanced data: the baseline to beat, weighted losses, metrics beyond accuracy.

A data scientist with a long-tailed regression label and a rare positive class found that eval's baseline and
metrics told them a model was good when a constant did as well; these tests hold what they now see.
"""

from __future__ import annotations

import pytest
import torch

from hydranet.core.evaluation import score_baselines

NAN = float("nan")


def kind_task(components, kind: str, name: str = "t", **params):
    """A task of a built-in kind, built as a spec's `{name, kind, label, ...}` entry builds it."""
    entry = components.tasks.get(kind)
    return entry.factory(name, entry.validate_params({"label": "x", **params}))


def test_the_regression_baseline_is_the_median_which_a_long_tail_does_not_pull(components):
    task = kind_task(components, "regression")
    labels = torch.cat([torch.arange(20.0, 117.0) % 40 + 20, torch.tensor([900.0, 950.0, 1000.0, NAN])])  # 3% tail
    labelled = labels[~labels.isnan()]
    ranked = sorted(labelled.tolist())  # 100 values: the median is the midpoint of the 50th and 51st
    median = (ranked[49] + ranked[50]) / 2
    assert task.trivial_output(labels).tolist() == pytest.approx([median])
    mae = score_baselines([task], {"t": task.trivial_output(labels)}, labels.reshape(-1, 1))["t"]["mae"]
    assert mae == pytest.approx(sum(abs(v - median) for v in ranked) / 100, rel=1e-5)
    assert mae < float((labelled - labelled.mean()).abs().mean())  # the mean it used to be loses to it


# ---------------------------------------------------------------- class imbalance in the loss


def spec_problems(faces, task: dict) -> str:
    """The message `load_spec` refuses a spec with, whose one task is `task`."""
    from conftest import tiny_spec
    from hydranet.core.errors import SpecError
    from hydranet.core.spec import load_spec

    with pytest.raises(SpecError) as refused:
        load_spec({**tiny_spec(faces), "tasks": [task]})
    return str(refused.value)


@pytest.mark.parametrize("params, said", [
    ({"kind": "binary", "pos_weight": 0}, "tasks[0].pos_weight: should be greater than 0"),
    ({"kind": "binary", "label_smoothing": 1}, "tasks[0].label_smoothing: should be less than 1"),
    ({"kind": "multiclass", "class_names": ["a", "b", "c"], "class_weights": [1, 2]},
     "tasks[0].class_weights: class_weights has 2 weights but the task has 3 classes"),
    ({"kind": "multiclass", "num_classes": 3, "class_weights": [1, 2, 3, 4]},
     "class_weights has 4 weights but the task has 3 classes"),
    ({"kind": "multiclass", "class_names": ["a", "b", "c"], "class_weights": {"a": 2, "z": 1}},
     "tasks[0].class_weights: class_weights names 'z', not a class of this task; its classes are a, b, c"),
    ({"kind": "multiclass", "num_classes": 3, "class_weights": [1, 0, 2]},
     "tasks[0].class_weights[1]: should be greater than 0"),
])
def test_bad_loss_weights_are_spec_errors_naming_the_field(faces, params, said):
    assert said in spec_problems(faces, {"name": "t", "label": "race", **params})


def test_pos_weight_and_smoothing_weigh_the_binary_loss_as_torch_does(components):
    task = kind_task(components, "binary", pos_weight=4.0, label_smoothing=0.2)
    output = torch.tensor([[2.0], [-1.0], [0.5], [3.0], [-2.0]])
    target = torch.tensor([1.0, 0.0, NAN, 0.0, 1.0])
    keep = torch.tensor([0, 1, 3, 4])
    smoothed = target[keep] * 0.8 + 0.1
    expected = torch.nn.functional.binary_cross_entropy_with_logits(output[keep, 0], smoothed,
                                                                     pos_weight=torch.tensor(4.0))
    assert float(task.loss(output, target)) == pytest.approx(float(expected), rel=1e-6)
    plain = kind_task(components, "binary")
    assert float(plain.loss(output, target)) == pytest.approx(float(
        torch.nn.functional.binary_cross_entropy_with_logits(output[keep, 0], target[keep])), rel=1e-6)


@pytest.mark.parametrize("weights", [[1.0, 5.0, 0.5], {"B": 5.0, "c": 0.5}])
def test_class_weights_give_torchs_weighted_mean_over_labelled_rows(components, weights):
    task = kind_task(components, "multiclass", class_names=["a", "b", "c"], class_weights=weights,
                     label_smoothing=0.1)
    torch.manual_seed(0)
    output = torch.randn(6, 3, requires_grad=True)
    target = torch.tensor([0.0, 1.0, NAN, 2.0, 1.0, NAN])
    keep = torch.tensor([0, 1, 3, 4])
    expected = torch.nn.functional.cross_entropy(output[keep], target[keep].long(), weight=torch.tensor([1.0, 5, 0.5]),
                                                 label_smoothing=0.1)
    loss = task.loss(output, target)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.backward()
    assert output.grad[[2, 5]].abs().sum() == 0  # rows with no label get no gradient
    nothing = task.loss(output, torch.full((6,), NAN))
    assert float(nothing) == 0 and torch.isfinite(nothing)
