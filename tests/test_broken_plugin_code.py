"""Plugin code that breaks its contract is named, with its plugin and what to fix, before it trains wrong.

Each test is a bug a plugin author made (found by a QA pass): a per-sample loss of the wrong shape, a
backbone whose width is not its `out_features`, a `parse_label` that returns a list or raises, a class
index out of range, a task factory that raises, `metrics()` that returns something else, a weighting whose
`combine` or `weights()` has the wrong shape, a task that does not say its `problem`. The checks run once,
on the dummy pass before training or where labels are parsed, never per step with a host read.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hydranet
from hydranet.core.errors import DataError, SpecError, TrainingError
from hydranet.core.forward import spec_model
from hydranet.core.inference import TrainedModel
from hydranet.core.metrics import Accuracy, MaskedMean
from hydranet.core.spec import load_spec
from hydranet.tasks.kinds import BinaryParams, BinaryTask, MulticlassParams, MulticlassTask

from conftest import tiny_spec, train_from_the_cli, with_inline_plugin, with_weighting

PLUGIN = "plugin 'broken' (hydranet-broken 0.0.1)"


def broken(hook: str, *args, **kwargs):
    """The built-in components plus one component from an inline plugin 'broken' (hydranet-broken 0.0.1)."""
    return with_inline_plugin(hook, *args, plugin="broken", distribution="hydranet-broken", version="0.0.1", **kwargs)


def train(raw: dict, components, tmp_path) -> None:
    hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "run", components=components,
                   progress=False, echo=False)


def with_smile(faces, task_class: type, params: type = BinaryParams, **entry) -> tuple[dict, object]:
    """A tiny spec whose second task, 'smile', is built by `task_class` from plugin 'broken'."""
    components = broken("register_tasks", "smile_kind", task_class, params=params)
    raw = tiny_spec(faces, epochs=1)
    raw["tasks"] = ["age", {"name": "smile", "kind": "smile_kind", "label": "gender", **entry}]
    return raw, components


# ---------------------------------------------------------------- 1. per_sample_loss of the wrong shape

class MeanLoss(BinaryTask):
    def per_sample_loss(self, output, target):
        return F.binary_cross_entropy_with_logits(output[:, 0], target)  # the mean: unlabelled rows count


class ColumnLoss(BinaryTask):
    def per_sample_loss(self, output, target):
        return F.binary_cross_entropy_with_logits(output, target[:, None], reduction="none")  # (N, 1)


class IntegerLoss(BinaryTask):
    def per_sample_loss(self, output, target):
        return (output[:, 0] > 0).long()


@pytest.mark.parametrize("task_class, returned, expected", [
    (MeanLoss, "returned shape ()", "expected (2,)"),
    (ColumnLoss, "returned shape (2, 1)", "expected (2,)"),
    (IntegerLoss, "returned dtype torch.int64", "expected a float tensor"),
])
def test_a_per_sample_loss_of_the_wrong_shape_is_named_before_training(faces, tmp_path, task_class, returned,
                                                                       expected):
    raw, components = with_smile(faces, task_class)
    with pytest.raises(TrainingError) as caught:
        train(raw, components, tmp_path)
    message = str(caught.value)
    assert f"the per_sample_loss of task 'smile' from {PLUGIN} {returned}" in message
    assert expected in message and "one loss per row, shape (N,)" in message
    assert not (tmp_path / "run" / "metrics.csv").exists()  # not one step trained


class OwnLoss(BinaryTask):
    """Overrides `loss` itself, forgetting to average: its per_sample_loss is not what is checked then."""

    def loss(self, output, target):
        return torch.nan_to_num(self.per_sample_loss(output.float(), torch.nan_to_num(target)))


def test_a_task_with_a_loss_of_its_own_gets_that_loss_checked(faces, tmp_path):
    raw, components = with_smile(faces, OwnLoss)
    with pytest.raises(TrainingError, match=re.escape(f"the loss of task 'smile' from {PLUGIN} returned shape (2,) "
                                                      "for 2 samples; expected a scalar, shape ()")):
        train(raw, components, tmp_path)


def test_the_dummy_loss_sees_a_missing_label_as_the_data_gives_it(faces, tmp_path):
    """Targets are float32 with NaN for a missing label; per_sample_loss gets them with the NaN masked to 0."""
    seen = []

    class Recording(BinaryTask):
        def per_sample_loss(self, output, target):
            seen.append(target.clone())
            return super().per_sample_loss(output, target)

    raw, components = with_smile(faces, Recording)
    spec = load_spec(raw, components=components)
    tasks = spec.build_tasks()
    from hydranet.core.forward import check_heads

    check_heads(spec_model(spec, tasks), tasks, spec)
    assert len(seen) == 1  # one call, with the NaN masked as Task.loss masks it
    assert seen[0].dtype == torch.float32 and seen[0].shape == (2,) and not torch.isnan(seen[0]).any()


# ---------------------------------------------------------------- 2. a backbone's real width

class Lying(hydranet.Backbone):
    """Says 64 features, gives 16."""

    def __init__(self):
        super().__init__()
        self.out_features = 64
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images):
        return self.net(images)


class Unpooled(hydranet.Backbone):
    """Gives (N, C, H, W)."""

    def __init__(self):
        super().__init__()
        self.out_features = 16
        self.net = nn.Conv2d(3, 16, 3)

    def forward(self, images):
        return self.net(images)


@pytest.mark.parametrize("backbone, returned, expected", [
    (Lying, "returned shape (2, 16) for 2 images of 16x16 px", "expected (2, 64)"),
    (Unpooled, "returned shape (2, 16, 14, 14) for 2 images of 16x16 px", "expected (2, 16)"),
])
def test_a_backbone_whose_output_is_not_its_out_features_is_named(faces, tmp_path, backbone, returned, expected):
    components = broken("register_backbones", "liar", backbone)
    raw = {**tiny_spec(faces, epochs=1), "backbone": "liar"}
    with pytest.raises(TrainingError) as caught:
        train(raw, components, tmp_path)
    message = str(caught.value)
    assert f"backbone 'liar' from {PLUGIN} {returned}; {expected}" in message
    assert "nn.AdaptiveAvgPool2d(1)" in message


# ---------------------------------------------------------------- 3. parse_label that breaks its contract

class ListLabel(BinaryTask):
    def parse_label(self, record):
        value = record.get(self.label)
        return None if value is None else [float(value), 1.0]


class RaisingLabel(BinaryTask):
    def parse_label(self, record):
        return float(record[self.label] + "x")


class TextLabel(BinaryTask):
    def parse_label(self, record):
        return record.get(self.label)  # the raw string, not a number


@pytest.mark.parametrize("task_class, problem", [
    (ListLabel, r"returned \[(0|1)\.0, 1\.0\] \(a list\); expected a number, or None when the label is missing"),
    (RaisingLabel, r"raised ValueError: could not convert string to float: '(0|1)x'"),
    (TextLabel, r"returned '(0|1)' \(a str\); expected a number, or None when the label is missing"),
])
def test_a_parse_label_that_breaks_its_contract_names_task_plugin_and_sample(faces, tmp_path, task_class, problem):
    raw, components = with_smile(faces, task_class)
    with pytest.raises(DataError) as caught:
        train(raw, components, tmp_path)
    message = str(caught.value)
    found = re.search(re.escape(f"the parse_label of task 'smile' from {PLUGIN} ") + problem
                      + re.escape(f" (sample {faces}") + r"\S+, gender='(0|1)'\)", message)
    assert found, message  # the task, its plugin, what it did, the file and the raw field at fault
    assert "Fix the task's parse_label" in message


class FiveGroups(MulticlassTask):
    """Four class names, but parse_label gives 0..4 (one edge too many)."""

    def parse_label(self, record):
        try:
            age = float(record["age"])
        except (KeyError, ValueError):
            return None
        return sum(age >= edge for edge in (13, 20, 40, 60))


def test_a_class_index_out_of_range_is_named_when_labels_are_parsed(faces, tmp_path):
    raw, components = with_smile(faces, FiveGroups, MulticlassParams, label="age", class_names=["a", "b", "c", "d"])
    with pytest.raises(DataError) as caught:
        train(raw, components, tmp_path)
    message = str(caught.value)
    assert f"the parse_label of task 'smile' from {PLUGIN} returned 4, not a class index of its 4 classes " \
           "(a whole number 0-3)" in message
    assert re.search(re.escape(f"(sample {faces}") + r"/\d+_\S+, age='\d+'\)", message), message
    assert "num_classes (4)" in message


def test_labels_in_range_pass_the_class_check(faces, tmp_path):
    from hydranet.core.data import parse_labels

    raw, components = with_smile(faces, MulticlassTask, MulticlassParams, class_names=["a", "b", "c", "d", "e"])
    spec = load_spec(raw, components=components)
    targets, report = parse_labels(spec.data.build().samples(), spec.build_tasks())
    assert report.labelled["smile"] > 0


# ---------------------------------------------------------------- a task factory that raises; `problem`

class TypoInInit(BinaryTask):
    def __init__(self, name, params):
        super().__init__(name, params.labell)


def test_a_task_factory_that_raises_is_a_spec_problem(faces):
    raw, components = with_smile(faces, TypoInInit)
    with pytest.raises(SpecError) as caught:
        load_spec(raw, components=components)
    message = str(caught.value)
    assert f"tasks[1]: building task 'smile' from {PLUGIN} raised AttributeError:" in message
    assert "'labell'" in message and "TypoInInit" in message


def test_a_weighting_factory_that_raises_is_a_spec_problem(faces):
    class Broken(hydranet.Weighting):
        def __init__(self, tasks):
            super().__init__(tasks)
            self.scale = 1 / 0

    components = with_weighting("broken_w", Broken, plugin="w-plugin")
    with pytest.raises(SpecError) as caught:
        load_spec({**tiny_spec(faces), "weighting": "broken_w"}, components=components)
    assert "weighting: building weighting 'broken_w' from plugin 'w-plugin'" in str(caught.value)
    assert "raised ZeroDivisionError: division by zero" in str(caught.value)


def test_the_spec_validate_command_reports_a_task_factory_that_raises(faces, tmp_path, monkeypatch):
    import yaml
    from click.testing import CliRunner

    from hydranet.core import spec as spec_module
    from hydranet.core.cli import cli

    raw, components = with_smile(faces, TypoInInit)
    monkeypatch.setattr(spec_module, "default_components", lambda: components)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["spec", "validate", str(path)])
    assert "building task 'smile'" in result.output and "raised AttributeError" in result.output, result.output
    assert not isinstance(result.exception, AttributeError)


class NoProblem(hydranet.Task):
    """A binary task that forgot `problem` (it would be weighted as a regression)."""

    def __init__(self, name, params):
        super().__init__(name, params.label)

    @property
    def out_features(self):
        return 1

    def parse_label(self, record):
        return float(record[self.label]) if self.label in record else None

    def per_sample_loss(self, output, target):
        return F.binary_cross_entropy_with_logits(output[:, 0], target, reduction="none")

    def metrics(self):
        return {"accuracy": Accuracy()}

    def decode(self, output):
        return []


def test_a_task_without_a_problem_is_refused_naming_its_class(faces):
    raw, components = with_smile(faces, NoProblem)
    with pytest.raises(SpecError) as caught:
        load_spec(raw, components=components)
    message = str(caught.value)
    assert f"task 'smile' from {PLUGIN} has no `problem`" in message
    assert "test_broken_plugin_code.NoProblem" in message and "'regression' or 'classification'" in message


def test_a_task_with_a_misspelt_problem_is_refused(faces):
    class Misspelt(BinaryTask):
        problem = "classifcation"

    raw, components = with_smile(faces, Misspelt)
    with pytest.raises(SpecError, match="has problem = 'classifcation': set the class attribute"):
        load_spec(raw, components=components)


# ---------------------------------------------------------------- metrics()

class FunctionMetric(BinaryTask):
    def metrics(self):
        return {"accuracy": lambda output, target: 0.5}


def odd_names(*names):
    class OddNames(BinaryTask):
        def metrics(self):
            return {name: Accuracy() for name in names}

    return OddNames


@pytest.mark.parametrize("task_class, problem", [
    (FunctionMetric, "returned the function FunctionMetric.metrics.<locals>.<lambda> as metric 'accuracy'; "
                     "expected a hydranet.Metric"),
    (odd_names("accuracy", "top.1"), "returned a metric named 'top.1'. Return fresh hydranet.Metric objects by "
                                     "name from the task's metrics(), e.g. {'accuracy': Accuracy()}; a metric name "
                                     "starts with a letter and holds only letters, digits, '_' or '-'"),
    (odd_names(""), "returned a metric named ''"),
    (odd_names("acc,top1"), "returned a metric named 'acc,top1'"),
])
def test_metrics_that_are_not_metrics_by_name_are_a_spec_problem(faces, task_class, problem):
    """Checked when the task is built: the baseline, before the model is built, is the first to use them."""
    raw, components = with_smile(faces, task_class)
    with pytest.raises(SpecError) as caught:
        load_spec(raw, components=components)
    message = str(caught.value)
    assert f"tasks[1]: the metrics() of task 'smile' from {PLUGIN} " in message and problem in message


def test_metrics_that_are_not_a_dict_are_named(faces):
    class ListMetrics(BinaryTask):
        def metrics(self):
            return [Accuracy()]

    raw, components = with_smile(faces, ListMetrics)
    with pytest.raises(SpecError, match=r"returned \[Accuracy\(\)\] \(a list\); expected a dict of hydranet.Metric"):
        load_spec(raw, components=components)


# ---------------------------------------------------------------- weightings

class VectorCombine(hydranet.Weighting):
    def combine(self, losses):
        return losses * 1.0

    def weights(self):
        return torch.ones(self.num_tasks)


class LongWeights(hydranet.Weighting):
    def combine(self, losses):
        return losses.sum()

    def weights(self):
        return torch.ones(self.num_tasks + 2)


@pytest.mark.parametrize("strategy, problem", [
    (VectorCombine, "the combine of weighting 'odd' from plugin 'w-plugin' (test 0) returned shape (3,) for 3 task "
                    "losses; expected a scalar, shape ()"),
    (LongWeights, "the weights() of weighting 'odd' from plugin 'w-plugin' (test 0) returned shape (5,) for 3 tasks; "
                  "expected (3,)"),
])
def test_a_weighting_of_the_wrong_shape_is_named_with_its_plugin(faces, tmp_path, strategy, problem):
    components = with_weighting("odd", strategy, plugin="w-plugin")
    with pytest.raises(TrainingError) as caught:
        train({**tiny_spec(faces, epochs=1), "weighting": "odd"}, components, tmp_path)
    assert problem in str(caught.value)


def test_the_combine_check_reads_no_tensor_on_the_host():
    """On meta tensors (no data), any host read would raise: the check is on the shape alone."""
    from conftest import make_tasks
    from hydranet.core.plugins import load_components, make_plugin_manager

    tasks = make_tasks(load_components(make_plugin_manager(entry_points=False)), "age", "gender")
    weighting = VectorCombine(tasks)
    with pytest.raises(TrainingError, match=r"returned shape \(2,\) for 2 task losses"):
        weighting.backward(torch.ones(2, device="meta", requires_grad=True))


# ---------------------------------------------------------------- a head whose backward raises, under sum

class _BreaksInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise ValueError("this head's gradient cannot be computed")


class BackwardBreakingHead(BinaryTask):
    def per_sample_loss(self, output, target):
        return super().per_sample_loss(_BreaksInBackward.apply(output), target)


def test_a_models_backward_error_under_the_built_in_sum_points_at_the_model(faces, tmp_path):
    # The built-in sum only adds the losses: telling the user to fix "the weighting's backward" would mislead.
    raw, components = with_smile(faces, BackwardBreakingHead)
    raw["weighting"] = "sum"
    with pytest.raises(TrainingError) as caught:
        train(raw, components, tmp_path)
    message = str(caught.value)
    assert "this head's gradient cannot be computed" in message
    assert "the fault is in the backward pass through the model: a head, a task's loss or the backbone" in message
    assert "Fix the weighting's backward" not in message


# ---------------------------------------------------------------- fit_targets, trivial_output, a metric's row_values

class FitBreaks(BinaryTask):
    def fit_targets(self, targets):
        raise ValueError("cannot fit these labels")


class BaselineBreaks(BinaryTask):
    def trivial_output(self, targets):
        return torch.tensor([float(targets.nanmean())]) / self.no_such_attribute


class BaselineOfTheWrongShape(BinaryTask):
    def trivial_output(self, targets):
        return torch.zeros(3)


class NoBaseline(BinaryTask):
    def trivial_output(self, targets):
        raise NotImplementedError




class RowValuesBreaks(MaskedMean):
    def row_values(self, output, target):
        raise KeyError("smiles")


class MetricBreaks(BinaryTask):
    def metrics(self):
        return {"accuracy": Accuracy(), "smiles": RowValuesBreaks()}


@pytest.mark.parametrize("task_class, said, fix", [
    (FitBreaks, "the fit_targets of task 'smile' from {plugin} raised ValueError: cannot fit these labels",
     "Fix the task's fit_targets"),
    (BaselineBreaks, "the trivial_output of task 'smile' from {plugin} raised AttributeError: 'BaselineBreaks' "
                     "object has no attribute 'no_such_attribute'", "Fix the task's trivial_output"),
    (BaselineOfTheWrongShape, "the trivial_output of task 'smile' from {plugin} returned shape (3,); expected 1 "
                              "value (out_features)", "Fix the task's trivial_output"),
    (MetricBreaks, "the row_values of metric 'smiles' of task 'smile' from {plugin} raised KeyError: 'smiles'",
     "Fix the metric"),
])
def test_a_task_method_that_breaks_before_training_names_plugin_task_and_method(faces, tmp_path, monkeypatch,
                                                                                task_class, said, fix):
    raw, components = with_smile(faces, task_class)
    result = train_from_the_cli(raw, components, tmp_path, monkeypatch)
    assert result.exit_code == 1, result.output
    assert said.format(plugin=PLUGIN) in result.output and fix in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "metrics.csv").exists()  # not one step trained


def test_a_metric_that_breaks_only_in_validation_is_named_too(faces, tmp_path):
    class LateBreaks(MaskedMean):
        def row_values(self, output, target):
            if output.unique().numel() > 2:  # the baseline's constant passes; the model's varied outputs do not
                raise ValueError("only two values expected")
            return (output[:, 0] > 0).float()

    class LateMetric(BinaryTask):
        def metrics(self):
            return {"accuracy": Accuracy(), "late": LateBreaks()}

    raw, components = with_smile(faces, LateMetric)
    with pytest.raises(TrainingError) as caught:
        train(raw, components, tmp_path)
    assert str(caught.value).startswith(f"the row_values of metric 'late' of task 'smile' from {PLUGIN} raised "
                                        "ValueError: only two values expected")


def test_a_trivial_output_that_raises_not_implemented_means_no_baseline(faces, tmp_path):
    raw, components = with_smile(faces, NoBaseline)
    result = hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "run", components=components,
                            progress=False, echo=False)
    assert "smile" not in result.baselines and "age" in result.baselines
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert saved["baseline_outputs"]["smile"] is None and len(saved["baseline_outputs"]["age"]) == 1
    evaluation = TrainedModel.from_checkpoint(tmp_path / "run" / "best.pt", components=components).evaluate()
    assert "smile" not in evaluation.baselines and "age" in evaluation.baselines and not evaluation.note


# ---------------------------------------------------------------- which raised exception a message tells of

def refuse(what: str):
    raise ValueError(f"no {what}")  # one line, two exceptions raised at it below


def test_two_exceptions_raised_at_one_line_are_told_apart_by_the_message_that_tells_of_each():
    """`raised_in` finds, in a message, the exception it tells of (for its traceback): by what was raised and
    where, not by the line alone, which two plugins' hooks (or two calls of one helper) may share."""
    from hydranet.core.errors import raised_in
    from hydranet.core.plugin_calls import PluginCall, Provenance
    from hydranet.core.plugins import load_components, make_plugin_manager

    def refusing(what: str):
        class Plugin:
            @hydranet.hookimpl
            def register_tasks(self, register):
                refuse(what)

        return Plugin()

    pm = make_plugin_manager(entry_points=False)
    for what in ("apples", "pears"):
        pm.add_plugin(refusing(what), what, distribution=f"hydranet-{what}", version="1", builtin=False)
    load_components(pm)
    for what in ("apples", "pears"):
        (message,) = pm.info[what].errors
        (said, error), = raised_in(message)
        assert said.startswith(f"ValueError: no {what} (at ") and str(error) == f"no {what}"

    faults = []
    for what in ("plums", "figs"):  # a call into plugin code words it apart: "raised ... (about). Fix. Raised at ..."
        with pytest.raises(TrainingError) as caught:
            PluginCall("the head of", Provenance(f"task '{what}'"), "Fix it")(refuse, what, about="on a sample")
        faults.append(str(caught.value))
    assert [[said.split(" (at ")[0] for said, _ in raised_in(fault)] for fault in faults] == [
        ["ValueError: no plums"], ["ValueError: no figs"]]
