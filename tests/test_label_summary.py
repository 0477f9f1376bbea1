"""The line a run starts with on each task's training labels: counts, class spread, a regression label's range."""

from __future__ import annotations

import math

import torch

import hydranet
from conftest import tiny_spec
from hydranet.core.label_summary import classes_missing_from, label_summary
from hydranet.core.spec import load_spec


class Named:
    def __init__(self, name, problem, class_names=None):
        self.name, self.problem, self.class_names = name, problem, class_names


TASKS = [Named("age", "regression"), Named("smile", "classification", ["no", "yes"]),
         Named("kind", "classification", None)]
NAN = math.nan


def test_the_summary_counts_labels_per_task_with_classes_by_name_and_a_regression_range():
    targets = torch.tensor([[20.0, 0, 2], [40.0, 0, NAN], [35.0, 1, 2], [NAN, 0, 0]])
    assert label_summary(TASKS, targets) == ("labels in the training split: age 3 of 4 (median 35, 20 to 40); "
                                             "smile 4 (no 3, yes 1); kind 3 of 4 (0 1, 2 2)")


def test_a_class_the_validation_split_lacks_is_named():
    train = torch.tensor([[20.0, 0, 2], [40.0, 1, 1]])
    val = torch.tensor([[30.0, 0, 2], [30.0, 0, NAN]])
    assert classes_missing_from(TASKS, train, val) == [
        "task 'smile': the validation split has no image of class 'yes', so how well the model tells it apart is not "
        "measured there; more images of it, or another data.split_seed, would bring it in",
        "task 'kind': the validation split has no image of class '1', so how well the model tells it apart is not "
        "measured there; more images of it, or another data.split_seed, would bring it in"]
    assert classes_missing_from(TASKS, train, val[:0]) == []  # no validation split: nothing to say


def test_a_run_logs_the_summary(faces, tmp_path, components):
    spec = load_spec(tiny_spec(faces, epochs=1), components=components)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "labels in the training split: age " in log and "; gender " in log


def test_the_median_said_is_the_regression_baseline_for_an_even_count(components):
    """The summary's median is the one eval's baseline predicts: the midpoint of the two middle labels."""
    ages = torch.tensor([[20.0], [30.0], [40.0], [90.0], [NAN]])
    entry = components.tasks.get("regression")
    task = entry.factory("age", entry.validate_params({"label": "age"}))
    assert label_summary([task], ages) == "labels in the training split: age 4 of 5 (median 35, 20 to 90)"
    assert task.trivial_output(ages[:, 0]).tolist() == [35.0]
