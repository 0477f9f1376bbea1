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
