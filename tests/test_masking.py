"""Missing labels: masked out of a task's loss and metrics, while the sample still trains its other tasks."""

from __future__ import annotations

import math

import pytest
import torch

from hydranet.core.forward import task_losses
from hydranet.core.interfaces import masked_mean
from hydranet.core.metrics import Accuracy, MacroF1, MeanAbsoluteError

NAN = float("nan")


def build(components, name, **params):
    entry = components.tasks.get(name)
    return entry.factory(name, entry.validate_params(params))


def test_masked_mean_ignores_missing_rows_and_handles_none_labelled():
    values = torch.tensor([1.0, 2.0, 100.0])
    assert masked_mean(values, torch.tensor([True, True, False])).item() == pytest.approx(1.5)
    empty = masked_mean(values.requires_grad_(), torch.zeros(3, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()
    assert values.grad.abs().sum() == 0  # a batch with no label gives no gradient, and no NaN


def test_losses_mask_missing_labels_per_task(components):
    age, gender, ethnicity = (build(components, n) for n in ("age", "gender", "ethnicity"))
    outputs = {
        "age": torch.tensor([[30.0], [40.0], [50.0]]),
        "gender": torch.tensor([[2.0], [-1.0], [0.5]]),
        "ethnicity": torch.tensor([[3.0, 0, 0, 0, 0], [0, 3.0, 0, 0, 0], [0, 0, 0, 0, 9.0]]),
    }
    # the third sample has no race label (like 39_1_20170116174525125.jpg.chip.jpg)
    targets = torch.tensor([[32.0, 0, 0], [40.0, 1, 1], [45.0, 1, NAN]])
    losses = task_losses([age, gender, ethnicity], outputs, targets)
    # age: standardisation is identity before fit_targets -> mean |err| = (2 + 0 + 5) / 3
    assert losses[0].item() == pytest.approx(7 / 3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0, 0.5]),
                                                               torch.tensor([0.0, 1, 1]))
    assert losses[1].item() == pytest.approx(bce.item())
    ce = torch.nn.functional.cross_entropy(outputs["ethnicity"][:2], torch.tensor([0, 1]))
    assert losses[2].item() == pytest.approx(ce.item())  # row 3 ignored


def test_sample_without_race_still_trains_age_and_gender(components):
    tasks = [build(components, n) for n in ("age", "gender", "ethnicity")]
    features = torch.randn(1, 4, requires_grad=True)
    heads = {t.name: t.build_head(4) for t in tasks}
    outputs = {name: head(features) for name, head in heads.items()}
    losses = task_losses(tasks, outputs, torch.tensor([[39.0, 1, NAN]]))
    losses.sum().backward()
    assert losses[2].item() == 0.0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in heads["ethnicity"].parameters())
    assert any(p.grad.abs().sum() > 0 for p in heads["age"].parameters())
    assert any(p.grad.abs().sum() > 0 for p in heads["gender"].parameters())
    assert features.grad.abs().sum() > 0


def test_metrics_skip_missing_labels():
    mae = MeanAbsoluteError()
    mae.update(torch.tensor([[10.0], [20.0], [99.0]]), torch.tensor([12.0, 26.0, NAN]),
               torch.tensor([True, True, False]))
    assert mae.compute().item() == pytest.approx(4.0)
    accuracy = Accuracy()
    accuracy.update(torch.tensor([[1.0], [-1.0], [1.0]]), torch.tensor([1.0, 1.0, NAN]),
                    torch.tensor([True, True, False]))
    assert accuracy.compute().item() == pytest.approx(0.5)
    assert math.isnan(MeanAbsoluteError().compute().item())  # nothing labelled is not a perfect score


def test_macro_f1_by_hand():
    f1 = MacroF1(3)
    # targets 0 0 1 2, predictions 0 1 1 1 (one-hot logits); row 5 unlabelled
    logits = torch.eye(3)[[0, 1, 1, 1, 2]] * 5
    f1.update(logits, torch.tensor([0, 0, 1, 2, NAN]), torch.tensor([True, True, True, True, False]))
    # class 0: tp1 fp0 fn1 -> 2/3 ; class 1: tp1 fp2 fn0 -> 2*1/(1+3)=0.5 ; class 2: tp0 fn1 -> 0
    assert f1.compute().item() == pytest.approx((2 / 3 + 0.5 + 0) / 3)


def test_label_parsers_reject_invalid_values(components):
    age, gender, ethnicity = (build(components, n) for n in ("age", "gender", "ethnicity"))
    assert age.parse_label({"age": "30"}) == 30.0
    assert age.parse_label({"age": "200"}) is None and age.parse_label({"age": "x"}) is None
    assert age.parse_label({}) is None
    assert gender.parse_label({"gender": "1"}) == 1 and gender.parse_label({"gender": "2"}) is None
    assert gender.parse_label({"gender": "female"}) == 1
    assert ethnicity.parse_label({"race": "4"}) == 4 and ethnicity.parse_label({"race": "7"}) is None
    assert ethnicity.parse_label({"race": "Indian"}) == 3 and ethnicity.parse_label({"race": "1.5"}) is None
    assert ethnicity.parse_label({}) is None


def test_regression_standardises_and_reports_in_units(components):
    age = build(components, "age")
    age.fit_targets(torch.tensor([20.0, 40.0, NAN]))
    assert (age.mean, age.std) == pytest.approx((30.0, math.sqrt(200)))
    head = age.build_head(4)
    torch.nn.init.zeros_(head[0][-1].weight)
    torch.nn.init.zeros_(head[0][-1].bias)
    assert head(torch.randn(2, 4)).flatten().tolist() == pytest.approx([30.0, 30.0])  # output in years
    loss = age.loss(torch.tensor([[30.0 + math.sqrt(200)]]), torch.tensor([30.0]))
    assert loss.item() == pytest.approx(1.0)  # one std off = loss 1
    assert age.decode(torch.tensor([[31.26]])) == [{"value": 31.26, "unit": "years"}]


def test_decode_gives_class_names_and_probabilities(components):
    gender, ethnicity = build(components, "gender"), build(components, "ethnicity")
    row = gender.decode(torch.tensor([[0.0]]))[0]
    assert row["class"] in ("male", "female") and row["probability"] == pytest.approx(0.5)
    row = ethnicity.decode(torch.tensor([[0.0, 0, 0, 5.0, 0]]))[0]
    assert row["class"] == "Indian" and row["probability"] > 0.9
    assert set(row["probabilities"]) == {"White", "Black", "Asian", "Indian", "Others"}


def test_trivial_outputs_are_median_and_majority(components):
    age, gender, ethnicity = (build(components, n) for n in ("age", "gender", "ethnicity"))
    assert age.trivial_output(torch.tensor([10.0, 20.0, NAN])).item() == pytest.approx(15.0)  # midpoint of 2
    assert age.trivial_output(torch.tensor([10.0, 20.0, 90.0, NAN])).item() == pytest.approx(20.0)  # not the mean
    assert gender.trivial_output(torch.tensor([1.0, 1.0, 0.0])).item() > 0
    assert ethnicity.trivial_output(torch.tensor([2.0, 2.0, 0.0, NAN])).argmax().item() == 2
