"""A trained model's outputs as per-task answers: each task's checked `decode`, and the error report.

Kept apart from inference.py, which loads, feeds and evaluates the model:
this is what its raw head outputs mean, task by task, and it is where a
plugin's faulty `decode` is named (task, kind and plugin) instead of
failing with an IndexError that names nothing. `TrainedModel`'s
`decode_task` and `error_report` delegate here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hydranet.core.errors import HydranetError
from hydranet.core.evaluation import (class_index_problem, confusion_classes, confusion_report, decode_disagreement,
                                      decoded_classes, decoded_values, error_distribution, logits_fit, no_confusion,
                                      task_unit)
from hydranet.core.image_input import given
from hydranet.core.registry import describe_plugin
from hydranet.core.wording import plural

if TYPE_CHECKING:
    from hydranet.core.inference import TrainedModel

#: `error_report`'s warning for a regression task whose decode does not give the head's output
NOT_LABEL_UNITS = ("decode turns this head's output into other values (typically {off:.3g} apart), so the head does "
                   "not output the label's units, as a regression task's should: this distribution is of decode's "
                   "values (what predict shows); exported files give the head's output as it is. See 'The contract' "
                   "in docs/plugins/task.md")


@torch.no_grad()
def error_report(model: TrainedModel, data: Any, index: Tensor, batch_size: int = 256) -> dict[str, dict[str, Any]]:
    """Per task: a confusion matrix (classification; see `class_report`) or the error distribution (regression).

    A regression head outputs the prediction in the label's units (the
    task contract; metrics, predict and export read it so). A task whose
    `decode` turns the output into other values breaks it: its
    distribution is then of decode's values, which predict shows, and a
    `warning` says so.
    """
    outputs: dict[str, list[Tensor]] = {t.name: [] for t in model.tasks}
    for start in range(0, index.numel(), batch_size):
        rows = index[start:start + batch_size]
        for name, value in model.predict_tensor(data.images[rows]).items():
            outputs[name].append(value.float().cpu())
    report = {}
    for k, task in enumerate(model.tasks):
        output = torch.cat(outputs[task.name]) if outputs[task.name] else torch.zeros(0, task.out_features)
        target = data.targets[index, k]
        labelled = ~torch.isnan(target)
        output, target = output[labelled], target[labelled]
        if task.problem == "classification":
            report[task.name] = class_report(model, k, output, target)
            continue
        decoded = model.decode_task(k, output) if output.shape[0] else None
        predicted, warning = output[:, 0], ""
        values = decoded_values(decoded)
        off = decode_disagreement(predicted, values)
        if off is not None:
            predicted = values
            warning = NOT_LABEL_UNITS.format(off=off)
        report[task.name] = {"unit": task_unit(task, decoded), **error_distribution(predicted - target),
                             **({"warning": warning} if warning else {})}
    return report


def class_report(model: TrainedModel, k: int, output: Tensor, target: Tensor) -> dict[str, Any]:
    """Task k's confusion matrix over these labelled rows, or a note on why none fits its head and labels.

    The task contract does not make a classification head output one logit
    per class: an ordinal head of cumulative logits outputs one value fewer
    than its classes, a multi-label head one logit per tag for a bitmask
    label. A head of one logit per class (or one for two) is read as the
    metrics read it; another is read through its decode's "class" (what
    predict shows), which must be one of the task's class_names. Labels that
    are not class indices, or a decode that names no class, fit no matrix.
    """
    task, width = model.tasks[k], int(output.shape[1])
    classes = confusion_classes(getattr(task, "class_names", None), width)
    problem = class_index_problem(target, len(classes))
    if problem is not None:
        if not getattr(task, "class_names", None):  # the classes are guessed from the width: say how to give them
            problem += (" (a head that does not output one logit per class gets a matrix from the task's "
                        "class_names and its decode's \"class\")")
        return no_confusion(task.name, classes, problem)
    if logits_fit(classes, width) or not output.shape[0]:
        decided = getattr(task, "decided_classes", None)  # a binary task's threshold decides, as in its metrics
        chosen = torch.tensor(decided(output)) if callable(decided) and output.shape[0] else None
        return confusion_report(output, target, classes, chosen)
    predicted = decoded_classes(model.decode_task(k, output), classes)
    if predicted is None:
        why = (f"its head outputs {plural(width, 'value')} for {plural(len(classes), 'class', 'classes')} and its "
               "decode gives no \"class\" among its class_names")
        return no_confusion(task.name, classes, why)
    return confusion_report(output, target, classes, predicted)


def decode_outputs(model: TrainedModel, outputs: dict[str, Tensor]) -> list[dict[str, Any]]:
    """A batch's raw outputs by task as one `{task: decoded row}` dict per image, in order."""
    count = next(iter(outputs.values())).shape[0] if outputs else 0
    decoded = {task.name: model.decode_task(k, outputs[task.name].float().cpu())
               for k, task in enumerate(model.tasks)}
    return [{name: rows[i] for name, rows in decoded.items()} for i in range(count)]


def decode_task(model: TrainedModel, k: int, output: Tensor) -> list[Any]:
    """Task k's `decode` of a batch of its outputs (on the host), checked: one dict per row, in order.

    A plugin's decode that returns another number of rows would pair
    predictions with the wrong images, or fail with an IndexError that
    names nothing; this names the task and its plugin.
    """
    who = f"the decode of {task_origin(model, k)}"
    fix = "Fix the task's decode: it returns one dict per row of its output, in order"
    try:
        rows = model.tasks[k].decode(output)
    except HydranetError:
        raise
    except Exception as error:  # a plugin's decode may raise anything
        raise HydranetError(f"{who} raised {type(error).__name__}: {error}. {fix}.") from error
    count = output.shape[0]
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise HydranetError(f"{who} returned {given(rows)} for a batch of {plural(count, 'image')}; expected a "
                            f"list of {count} dicts. {fix}.")
    if len(rows) != count:
        raise HydranetError(f"{who} returned {plural(len(rows), 'row')} for a batch of {plural(count, 'image')}; "
                            f"expected {count}. {fix}.")
    wrong = next((i for i, row in enumerate(rows) if not isinstance(row, Mapping)), None)
    if wrong is not None:
        raise HydranetError(f"{who} returned {given(rows[wrong])} for row {wrong}; expected a dict such as "
                            "{'value': ..., 'unit': ...} or {'class': ..., 'probability': ...}. " + f"{fix}.")
    return list(rows)


def task_origin(model: TrainedModel, k: int) -> str:
    """"task 'x' (kind 'k') from plugin 'p' (hydranet-p 1.0)", for a message about a plugin's task."""
    name = model.tasks[k].name
    entry = model.spec.tasks[k].component.entry if k < len(model.spec.tasks) else None
    if entry is None:
        return f"task '{name}'"
    pm = model.components.pm if model.components is not None else None
    who = pm.describe(entry.plugin) if pm is not None else describe_plugin(entry.plugin)
    kind = f" (kind '{entry.name}')" if entry.name != name else ""
    return f"task '{name}'{kind} from {who}"
