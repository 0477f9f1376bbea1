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
def test_class_weights_scale_each_row_and_the_loss_is_their_mean_over_labelled_rows(components, weights):
    task = kind_task(components, "multiclass", class_names=["a", "b", "c"], class_weights=weights,
                     label_smoothing=0.1)
    torch.manual_seed(0)
    output = torch.randn(6, 3, requires_grad=True)
    target = torch.tensor([0.0, 1.0, NAN, 2.0, 1.0, NAN])
    keep = torch.tensor([0, 1, 3, 4])
    expected = torch.nn.functional.cross_entropy(output[keep], target[keep].long(), weight=torch.tensor([1.0, 5, 0.5]),
                                                 label_smoothing=0.1, reduction="sum") / len(keep)
    loss = task.loss(output, target)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.backward()
    assert output.grad[[2, 5]].abs().sum() == 0  # rows with no label get no gradient
    nothing = task.loss(output, torch.full((6,), NAN))
    assert float(nothing.detach()) == 0 and torch.isfinite(nothing)
    halves = [task.loss(output[part], target[part]) * 2 for part in (slice(0, 3), slice(3, 6))]  # 2 labels each
    assert float(sum(halves).detach() / 4) == pytest.approx(float(loss.detach()), rel=1e-6)  # batches add up


# ---------------------------------------------------------------- metrics beyond accuracy


def hand_scores(logits: list[float], labels: list[int], threshold: float = 0.5) -> dict[str, float]:
    """accuracy, f1, auc and balanced accuracy of a binary logit, counted pair by pair as a textbook does."""
    import math

    cut = math.log(threshold / (1 - threshold))
    said = [int(x > cut) for x in logits]
    tp = sum(s == 1 and y == 1 for s, y in zip(said, labels))
    fp = sum(s == 1 and y == 0 for s, y in zip(said, labels))
    fn = sum(s == 0 and y == 1 for s, y in zip(said, labels))
    tn = sum(s == 0 and y == 0 for s, y in zip(said, labels))
    positives = [x for x, y in zip(logits, labels) if y == 1]
    negatives = [x for x, y in zip(logits, labels) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return {"accuracy": (tp + tn) / len(labels), "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "auc": wins / (len(positives) * len(negatives)),
            "balanced_accuracy": (tp / (tp + fn) + tn / (tn + fp)) / 2}


def test_a_run_logs_the_binary_metrics_it_is_asked_for_as_its_validation_outputs_give_them(faces, tmp_path):
    import csv

    import hydranet
    from conftest import tiny_spec
    from hydranet.core.run_setup import load_prepared_data
    from hydranet.core.spec import load_spec

    chosen = ["accuracy", "f1", "auc", "balanced_accuracy"]
    spec = {**tiny_spec(faces, epochs=3, lr=1e-2), "tasks": [{"name": "gender", "metrics": chosen}]}
    result = hydranet.train(load_spec(spec), out_dir=tmp_path / "run", progress=False, echo=False)
    with open(tmp_path / "run" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [c for c in rows[0] if c.startswith("val.")] == [f"val.gender.{name}" for name in chosen]
    logged = next(row for row in rows if int(row["epoch"]) == result.best_epoch)  # best.pt's epoch

    model = hydranet.load(tmp_path / "run" / "best.pt")
    data = load_prepared_data(load_spec(spec), model.tasks, progress=False)
    logits = model.predict_tensor(data.images[data.val_index])["gender"][:, 0].tolist()
    labels = [int(y) for y in data.targets[data.val_index, 0].tolist()]
    assert 0 < sum(labels) < len(labels)  # both classes, so every metric is defined
    for name, value in hand_scores(logits, labels).items():
        assert float(logged[f"val.gender.{name}"]) == pytest.approx(value, abs=1e-5), name
    assert result.baselines["gender"]["auc"] == 0.5 and result.baselines["gender"]["balanced_accuracy"] == 0.5


def test_binary_metrics_over_batches_with_missing_labels_and_ties(components):
    task = kind_task(components, "binary", metrics=["accuracy", "f1", "precision", "recall", "balanced_accuracy",
                                                    "auc"])
    batches = [(torch.tensor([[2.0], [-1.0], [0.5], [0.5]]), torch.tensor([1.0, 0.0, NAN, 0.0])),
               (torch.tensor([[0.5], [-3.0], [1.0]]), torch.tensor([1.0, 1.0, 0.0]))]
    metrics = task.metrics()
    for metric in metrics.values():
        for output, target in batches:
            metric.update(output, target, ~target.isnan())
    logits, labels = [2.0, -1.0, 0.5, 0.5, -3.0, 1.0], [1, 0, 0, 1, 1, 0]  # the labelled rows; 0.5 ties
    expected = hand_scores(logits, labels)
    expected.update(precision=2 / 4, recall=2 / 3)  # said positive: 2.0, 0.5, 0.5, 1.0; of them 2.0 and 0.5 are
    assert {name: float(m.compute()) for name, m in metrics.items()} == pytest.approx(expected)
    for metric in metrics.values():
        metric.reset()
        assert torch.isnan(metric.compute())  # nothing labelled: no score, not a perfect one


def test_auc_of_a_nan_score_is_nan_not_a_win(components):
    auc = kind_task(components, "binary", metrics=["auc"]).metrics()["auc"]
    target = torch.tensor([1.0, 0.0, 1.0, NAN])
    auc.update(torch.tensor([[NAN], [0.0], [1.0], [5.0]]), target, ~target.isnan())
    assert torch.isnan(auc.compute())  # sorted above every score, the NaN counted as a win: AUC 1.0
    auc.reset()
    auc.update(torch.tensor([[2.0], [0.0], [1.0], [NAN]]), target, ~target.isnan())  # unlabelled: no matter
    assert float(auc.compute()) == 1.0


def test_constant_predictions_score_the_chance_level_as_baselines(components):
    binary = kind_task(components, "binary", "b", metrics=["auc", "balanced_accuracy", "accuracy"])
    multi = kind_task(components, "multiclass", "m", num_classes=4, metrics=["balanced_accuracy", "accuracy"])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 3.0], [NAN, 2.0]])
    constants = {"b": binary.trivial_output(targets[:, 0]), "m": multi.trivial_output(targets[:, 1])}
    scores = score_baselines([binary, multi], constants, targets)
    assert scores == {"b": pytest.approx({"auc": 0.5, "balanced_accuracy": 0.5, "accuracy": 0.75}),
                      "m": pytest.approx({"balanced_accuracy": 1 / 4, "accuracy": 2 / 5})}


def test_each_metric_s_baseline_is_its_best_constant_not_the_majority_class_s(components):
    """With 1 positive in 5 the majority constant (always 0) scores f1, precision and recall 0: no baseline."""
    binary = kind_task(components, "binary", "b", metrics=["accuracy", "f1", "precision", "recall"])
    targets = torch.tensor([[1.0], [0.0], [0.0], [0.0], [0.0], [NAN]])
    scores = score_baselines([binary], {"b": binary.trivial_output(targets[:, 0])}, targets)
    positives = 1 / 5  # always 1: precision 1/5, recall 1, f1 2pr/(p+r) = 1/3; accuracy stays always 0's 4/5
    assert scores == {"b": pytest.approx({"accuracy": 4 / 5, "f1": 1 / 3, "precision": positives, "recall": 1.0})}


def test_auc_refuses_a_run_of_several_processes(components, monkeypatch):
    from hydranet.core.errors import HydranetError

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    with pytest.raises(HydranetError, match="train with --nproc 1, or leave auc out of the task's metrics"):
        kind_task(components, "binary", metrics=["accuracy", "auc"]).metrics()
    assert set(kind_task(components, "binary", metrics=["accuracy", "f1"]).metrics()) == {"accuracy", "f1"}


def test_train_nproc_refuses_auc_before_it_launches_any_process(faces, tmp_path, monkeypatch):
    import yaml
    from click.testing import CliRunner

    from conftest import tiny_spec
    from hydranet.core import distributed
    from hydranet.core.cli import cli

    launched = []
    monkeypatch.setattr(distributed, "launch_local", lambda *args, **kwargs: launched.append(args) or 0)
    spec = {**tiny_spec(faces, batch_size=4), "tasks": [{"name": "gender", "metrics": ["accuracy", "auc"]}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(cli, ["train", str(path), "--out", str(tmp_path / "run"), "--nproc", "2"])
    assert result.exit_code != 0 and not launched
    assert ("the 'auc' metric of task 'gender' is exact over all validation scores, which a run of 2 processes "
            "splits between them; train with --nproc 1") in result.output


@pytest.mark.parametrize("params, said", [
    ({"kind": "binary", "metrics": []}, "tasks[0].metrics: name at least one metric"),
    ({"kind": "binary", "metrics": ["f1", "auc", "f1"]}, "tasks[0].metrics: 'f1' listed twice"),
    ({"kind": "binary", "metrics": ["macro_f1"]},
     "tasks[0].metrics[0]: 'macro_f1' is not a choice; choices: accuracy, f1, precision, recall, balanced_accuracy, "
     "auc"),
    ({"kind": "multiclass", "num_classes": 3, "metrics": ["auc"]},
     "tasks[0].metrics[0]: 'auc' is not a choice; choices: accuracy, macro_f1, balanced_accuracy"),
])
def test_bad_metric_lists_are_spec_errors(faces, params, said):
    assert said in spec_problems(faces, {"name": "t", "label": "race", **params})


def test_default_metrics_keep_the_columns_existing_runs_have(components):
    assert list(kind_task(components, "binary").metrics()) == ["accuracy"]
    assert list(kind_task(components, "multiclass", num_classes=3).metrics()) == ["accuracy", "macro_f1"]


# ---------------------------------------------------------------- the decision threshold


def test_the_threshold_decides_the_class_the_metrics_count_and_predict_shows(components):
    task = kind_task(components, "binary", class_names=["no", "yes"], threshold=0.8,
                     metrics=["accuracy", "recall", "precision"])
    logit_of = torch.logit(torch.tensor([0.9, 0.7, 0.3, 0.85]))  # P(yes) of four rows
    output, target = logit_of.reshape(-1, 1), torch.tensor([1.0, 1.0, 0.0, 0.0])
    rows = task.decode(output)
    assert [row["class"] for row in rows] == ["yes", "no", "no", "yes"]  # 0.7 is below 0.8: "no"
    assert [row["probability"] for row in rows] == pytest.approx([0.9, 0.3, 0.7, 0.85], abs=1e-4)  # of the class shown
    assert [row["probabilities"]["yes"] for row in rows] == pytest.approx([0.9, 0.7, 0.3, 0.85], abs=1e-4)
    metrics = task.metrics()
    for metric in metrics.values():
        metric.update(output, target, torch.ones(4, dtype=torch.bool))
    assert {name: float(m.compute()) for name, m in metrics.items()} == pytest.approx(
        {"accuracy": 2 / 4, "recall": 1 / 2, "precision": 1 / 2})
    default = kind_task(components, "binary", class_names=["no", "yes"])
    assert [row["class"] for row in default.decode(output)] == ["yes", "yes", "no", "yes"]


@pytest.mark.parametrize("threshold", [0, 1, 1.5])
def test_a_threshold_outside_0_1_is_a_spec_error(faces, threshold):
    said = spec_problems(faces, {"name": "t", "label": "gender", "kind": "binary", "threshold": threshold})
    assert "tasks[0].threshold: should be" in said


# ---------------------------------------------------------------- huber's delta


@pytest.mark.parametrize("normalize", [True, False])
def test_huber_delta_is_in_standardised_units_when_normalized(components, normalize):
    task = kind_task(components, "regression", loss="huber", huber_delta=0.3, normalize=normalize)
    labels = torch.tensor([10.0, 20.0, 40.0, 50.0, NAN])
    task.fit_targets(labels)
    output = torch.tensor([[12.0], [35.0], [41.0], [20.0], [7.0]])
    keep = torch.tensor([0, 1, 2, 3])
    mean, std = (float(labels[keep].mean()), float(labels[keep].std())) if normalize else (0.0, 1.0)
    expected = torch.nn.functional.huber_loss((output[keep, 0] - mean) / std, (labels[keep] - mean) / std, delta=0.3)
    assert float(task.loss(output, labels)) == pytest.approx(float(expected), rel=1e-6)
    assert float(kind_task(components, "regression", loss="huber", normalize=normalize).loss(output, labels)) != \
        pytest.approx(float(expected), rel=1e-3)  # the default delta, 1, gives another loss


def test_a_huber_delta_of_zero_is_a_spec_error(faces):
    assert "tasks[0].huber_delta: should be greater than 0" in spec_problems(
        faces, {"name": "t", "label": "age", "kind": "regression", "huber_delta": 0})


# ---------------------------------------------------------------- what predict's probability is


def test_predict_help_says_whose_probability_the_csv_column_is():
    from click.testing import CliRunner

    from hydranet.core.cli import cli

    shown = " ".join(CliRunner().invoke(cli, ["predict", "--help"], terminal_width=200).output.split())
    assert "<task>_probability, the probability of the class shown (for a binary task not P(class 1) when class 0 " \
           "is shown: then P(class 1) is 1 minus it; --json gives every class's)" in shown


def test_eval_s_confusion_matrix_counts_the_classes_the_threshold_decides(faces, tmp_path):
    """The matrix was read at 0.5 whatever the threshold, so its diagonal disagreed with the accuracy beside it."""
    import json

    import hydranet
    from click.testing import CliRunner

    from conftest import tiny_spec
    from hydranet.core.cli import cli
    from hydranet.core.spec import load_spec

    spec = {**tiny_spec(faces, epochs=1), "tasks": [{"name": "gender", "threshold": 0.9}]}
    hydranet.train(load_spec(spec), out_dir=tmp_path / "run", progress=False, echo=False)
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "run" / "best.pt"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    matrix = report["confusion_matrices"]["gender"]["confusion_matrix"]
    right, total = sum(matrix[i][i] for i in range(2)), sum(map(sum, matrix))
    assert right / total == pytest.approx(report["metrics"]["gender"]["accuracy"], abs=1e-6)


def test_a_sweep_with_nproc_refuses_auc_before_any_run_starts(faces, tmp_path, monkeypatch):
    import yaml
    from click.testing import CliRunner

    from conftest import tiny_spec
    from hydranet.core import distributed
    from hydranet.core.cli import cli

    monkeypatch.setattr(distributed, "check_process_count", lambda *args, **kwargs: None)  # no GPUs here
    spec = {**tiny_spec(faces, batch_size=4), "tasks": [{"name": "gender", "metrics": ["accuracy", "auc"]}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(cli, ["train", str(path), "--sweep", "train.seed=0,1", "--out", str(tmp_path / "w"),
                                      "--nproc", "2"])
    assert result.exit_code != 0 and "none was started" in result.output
    assert "the 'auc' metric of task 'gender' is exact over all validation scores" in result.output
