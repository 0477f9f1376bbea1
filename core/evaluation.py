"""Evaluation: exact per-task losses and metrics over a set of images, and the constant baseline to beat.

Kept apart from the training loop because `hydranet eval` and the Python API
evaluate checkpoints with the same code the loop validates with. The second
half holds what `hydranet eval` shows beside the metrics: confusion matrices,
error distributions, and the check that a regression head outputs the
label's units (what its decode shows).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hydranet.core.augment import DeviceAugment
from hydranet.core.batches import BatchSource
from hydranet.core.device import RunSettings
from hydranet.core.interfaces import Task, label_mask
from hydranet.core.metrics import MaskedMean, Metric, predicted_class
from hydranet.core.plugin_calls import PluginCall, kind_of, provenance
from hydranet.core.values import is_number
from hydranet.core.wording import plural


@dataclass
class EvalResult:
    """Validation losses and metrics per task, read from the device once."""

    losses: dict[str, float]
    metrics: dict[str, dict[str, float]]
    labelled: dict[str, int]
    higher_is_better: dict[str, dict[str, bool]] = field(default_factory=dict)

    @property
    def total_loss(self) -> float:
        """The sum of the task losses; inf when any is not finite, so that such an epoch is never the best.

        A task with no labelled sample here has no loss (NaN, not a blow-up) and adds nothing: counting it
        would keep every epoch from being the best, and no best.pt would ever be written.
        """
        if self.nonfinite_tasks():
            return math.inf
        return sum(value for name, value in self.losses.items() if self.labelled.get(name, 1))

    def nonfinite_tasks(self) -> list[str]:
        """The tasks whose validation loss is inf or NaN (their predictions blew up); not those with no label."""
        return [name for name, value in self.losses.items() if self.labelled.get(name, 1) and not math.isfinite(value)]


@torch.no_grad()
def evaluate(
    forward: Any,
    tasks: Sequence[Task],
    source: BatchSource,
    targets: Tensor,
    index: Tensor,
    augment: DeviceAugment,
    settings: RunSettings,
    batch_size: int,
    *,
    pad: bool = False,
    all_reduce: Callable[[Tensor], Tensor] | None = None,
) -> EvalResult:
    """Exact per-task losses and metrics over `index`: sums and counts, read once at the end.

    With `pad`, a short last batch is filled up to `batch_size` with rows whose
    labels are all missing, so a compiled model sees one static shape and the
    padding counts for nothing in any loss or metric. With `all_reduce` (a
    distributed run, each rank evaluating its part of the index), the loss
    sums, counts and metric buffers are summed over the ranks before anything
    is computed from them, so the result is that of the whole index.
    """
    device = settings.device
    metrics = {task.name: {k: m.to(device) for k, m in task.metrics().items()} for task in tasks}
    updates = {task.name: [(metric_call(task, name, m, "update"), m.update) for name, m in metrics[task.name].items()]
               for task in tasks}
    loss_sums = torch.zeros(len(tasks), device=device)
    counts = torch.zeros(len(tasks), device=device)
    batch_size = min(batch_size, max(1, index.numel()))
    for images, rows in source.batches(index, batch_size, drop_last=False):
        y = targets[rows]
        missing = batch_size - rows.numel()
        if pad and missing:
            images = torch.cat([images, images[:1].expand(missing, *images.shape[1:])])
            y = torch.cat([y, y.new_full((missing, y.shape[1]), float("nan"))])
        if settings.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with settings.autocast():
            outputs = forward(augment(images, train=False))
        for k, task in enumerate(tasks):
            output, target = outputs[task.name].float(), y[:, k]
            mask = label_mask(target)
            n = mask.sum()
            loss_sums[k] += task.loss(output, target) * n
            counts[k] += n
            for guard, update in updates[task.name]:
                guard(update, output, target, mask)
    if all_reduce is not None:
        for total in [loss_sums, counts, *(b for t in tasks for m in metrics[t.name].values() for b in m.buffers())]:
            all_reduce(total)
    values = torch.cat([loss_sums / counts.clamp_min(1), counts] +
                       [metric_call(task, name, m, "compute")(m.compute, check=_one_number).reshape(1).float()
                        for task in tasks for name, m in metrics[task.name].items()])
    host = values.tolist()  # the one synchronisation of an evaluation
    k = len(tasks)
    losses = {t.name: (host[i] if host[k + i] > 0 else math.nan) for i, t in enumerate(tasks)}
    labelled = {t.name: int(host[k + i]) for i, t in enumerate(tasks)}
    flat = iter(host[2 * k:])
    result = {task.name: {name: next(flat) for name in metrics[task.name]} for task in tasks}
    directions = {t.name: {n: m.higher_is_better for n, m in metrics[t.name].items()} for t in tasks}
    return EvalResult(losses, result, labelled, directions)


TRIVIAL_FIX = ("Fix the task's trivial_output: it returns the head's output for the best constant prediction on "
               "the labels it is given (NaN = missing), a tensor of out_features values, or raises "
               "NotImplementedError when the task has none; or leave the task out of the spec")
METRIC_FIX = ("Fix the metric: update(output, target, mask) adds a batch (a MaskedMean's row_values returns one "
              "value per row, shape (N,)) and compute() returns one number as a tensor; or leave the task out of "
              "the spec")


def metric_call(task: Task, name: str, metric: Metric, method: str) -> PluginCall:
    """The guard of a call to a task's metric, `method` being "update" or "compute".

    Its errors name the method the plugin wrote: a MaskedMean's `row_values` where the update is MaskedMean's own.
    """
    if method == "update" and isinstance(metric, MaskedMean) and type(metric).update is MaskedMean.update:
        method = "row_values"
    return PluginCall(f"the {method} of metric '{name}' of", provenance(task, "task"), METRIC_FIX)


def _one_number(value: Any) -> str | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        return None
    return f"returned {kind_of(value)}; expected one number as a tensor"


def _constant_problem(task: Task) -> Callable[[Any], str | None]:
    def problem(value: Any) -> str | None:
        n = int(task.out_features)
        if not isinstance(value, Tensor):
            return f"returned {kind_of(value)}; expected a tensor of {plural(n, 'value')} (out_features)"
        if value.numel() != n:
            return f"returned shape {tuple(value.shape)}; expected {plural(n, 'value')} (out_features)"
        return None
    return problem


def baseline_outputs(tasks: Sequence[Task], train_targets: Tensor,
                     only: Container[str] | None = None) -> dict[str, Tensor | None]:
    """Each task's best constant prediction (median / majority class) on the training labels, as a head output.

    None for a task whose `trivial_output` raises NotImplementedError (it has no baseline). `only`: the names
    of the tasks to fit (default: all). Training stores these in the checkpoint (`constants_for_checkpoint`),
    so that evaluating other data scores the constant of the labels the model learnt from, not of that data.
    """
    constants: dict[str, Tensor | None] = {}
    for k, task in enumerate(tasks):
        if only is not None and task.name not in only:
            continue
        call = PluginCall("the trivial_output of", provenance(task, "task"), TRIVIAL_FIX, passes=(NotImplementedError,))
        try:
            constant = call(task.trivial_output, train_targets[:, k], check=_constant_problem(task))
        except NotImplementedError:
            constants[task.name] = None
            continue
        constants[task.name] = constant.detach().float().cpu().reshape(-1)
    return constants


def constants_for_checkpoint(constants: Mapping[str, Tensor | None]) -> dict[str, list[float] | None]:
    """`baseline_outputs` as plain lists, which a checkpoint loaded with `weights_only=True` can hold."""
    return {name: None if value is None else value.tolist() for name, value in constants.items()}


def score_baselines(tasks: Sequence[Task], constants: Mapping[str, Tensor | Sequence[float] | None],
                    targets: Tensor) -> dict[str, dict[str, float]]:
    """Each task's metrics for its best constant prediction on `targets`; a task with none is left out.

    The constant is the task's `baseline_outputs` one (fitted on the training labels), and for a task that
    offers every constant it could output (`constant_outputs`: a classification's "always class c"), the best
    of those for each metric in its own direction: no one constant is best for all (accuracy's is the common
    class, f1's and recall's the positive one), and a baseline of 0 for f1 on rare positives would be no
    baseline at all.
    """
    baselines = {}
    for k, task in enumerate(tasks):
        constant = constants.get(task.name)
        if constant is None:
            continue
        target = targets[:, k]
        offered = getattr(task, "constant_outputs", None)
        candidates = [constant, *(offered() if callable(offered) else ())]
        scored = [_constant_scores(task, candidate, target) for candidate in candidates]
        values = {}
        for name, (first, higher) in scored[0].items():
            finite = [score[name][0] for score in scored if not math.isnan(score[name][0])]
            values[name] = (max(finite) if higher else min(finite)) if finite else first
        baselines[task.name] = values
    return baselines


def _constant_scores(task: Task, constant: Tensor | Sequence[float], target: Tensor) -> dict[str, tuple[float, bool]]:
    """Each metric of `task` for `constant` predicted on every row of `target`: (value, higher is better)."""
    output = torch.as_tensor(constant, dtype=torch.float32).reshape(1, -1).expand(target.shape[0], -1)
    scores = {}
    for name, metric in task.metrics().items():
        metric_call(task, name, metric, "update")(metric.update, output, target, label_mask(target))
        value = float(metric_call(task, name, metric, "compute")(metric.compute, check=_one_number))
        scores[name] = (value, bool(getattr(metric, "higher_is_better", True)))
    return scores


# ---------------------------------------------------------------- what a metric hides


def confusion_report(output: Tensor, target: Tensor, class_names: Sequence[str] | None,
                     predicted: Tensor | None = None) -> dict[str, Any]:
    """Counts[true class][predicted class] with the class names, from logits.

    `predicted`: each row's class index where the task says it (its
    decode's "class", for a head that does not output one logit per class);
    by default, read from the logits as the metrics read them.

    Rows whose logits are not all finite (NaN or inf) are counted in
    "nonfinite", with a "warning": the matrix counts them where the metrics
    do, in the class such logits happen to pick.
    """
    names = confusion_classes(class_names, output.shape[1])
    k = len(names)
    matrix = torch.zeros(k, k, dtype=torch.long)
    if target.numel():
        predicted = predicted_class(output) if predicted is None else predicted
        matrix.index_put_((target.long(), predicted), torch.ones(target.numel(), dtype=torch.long), accumulate=True)
    report: dict[str, Any] = {"classes": names, "confusion_matrix": matrix.tolist()}
    nonfinite = int((~torch.isfinite(output)).any(dim=1).sum()) if output.numel() else 0
    if nonfinite:
        report.update(nonfinite=nonfinite, warning=nonfinite_warning(
            nonfinite, int(target.numel()), "the matrix and the metrics count each in the class its NaN or inf "
                                            "logits happen to pick"))
    return report


def confusion_classes(class_names: Sequence[str] | None, width: int) -> list[str]:
    """A confusion matrix's classes: the task's class_names, else one per logit ("0", "1", ...; two for one)."""
    if class_names:
        return [str(name) for name in class_names]
    return [str(i) for i in range(2 if width == 1 else width)]


def logits_fit(classes: Sequence[str], width: int) -> bool:
    """Whether a head of `width` outputs gives one logit per class (or one logit for two), as argmax reads it."""
    return len(classes) == (2 if width == 1 else width)


def decoded_classes(rows: Sequence[Any] | None, classes: Sequence[str]) -> Tensor | None:
    """Each decoded row's "class" as its index in `classes`; None when some row's class is not one of them."""
    index = {name: i for i, name in enumerate(classes)}
    found = [index.get(str(row.get("class"))) if isinstance(row, Mapping) else None for row in rows or ()]
    return None if None in found else torch.tensor(found, dtype=torch.long)


def class_index_problem(target: Tensor, count: int) -> str | None:
    """Why labels are not class indices 0 .. count - 1 (a bitmask, a level, a fraction), or None when they are."""
    wrong = (target != target.round()) | (target < 0) | (target >= count)
    if not bool(wrong.any()):
        return None
    value = float(target[wrong][0])
    shown = f"{value:g}" if math.isfinite(value) else str(value)
    return f"its labels are not class indices 0 to {count - 1} (one is {shown})"


def no_confusion(task: str, classes: Sequence[str], why: str) -> dict[str, Any]:
    """The report of a classification task no confusion matrix fits: a note naming the task and why."""
    return {"classes": list(classes), "confusion_matrix": None,
            "note": f"no confusion matrix for task '{task}': {why}; its metrics are not affected"}


ERROR_QUANTILES = (0.5, 0.9, 0.99)


def nonfinite_warning(nonfinite: int, count: int, consequence: str) -> str:
    """That `nonfinite` of `count` predictions are NaN or inf, what the report does with them, and the way out."""
    some = (f"{'the' if count == 1 else 'all'} {plural(count, 'prediction')} {'is' if count == 1 else 'are'}"
            if nonfinite == count else f"{nonfinite} of {count} predictions {'is' if nonfinite == 1 else 'are'}")
    return (f"the model outputs NaN or inf: {some} not finite, and {consequence}. Its weights may hold NaN or inf "
            "(a damaged checkpoint, or training that diverged): evaluate another checkpoint of the run, or retrain "
            "with a lower train.lr")


def error_distribution(errors: Tensor) -> dict[str, Any]:
    """Signed errors (predicted - true): bias (mean), median, MAE, RMSE, |error| quantiles, histogram.

    An MAE alone cannot tell a model that is always a little off from one that
    is usually right and sometimes wildly wrong, or one that is biased.

    `count` is every error given; an error that is not finite (the model
    output NaN or inf) is counted in `nonfinite` and left out of the rest,
    which are of the finite ones (NaN when there is none), and a `warning`
    says so.
    """
    if errors.numel() == 0:
        return {"count": 0}
    finite = errors[torch.isfinite(errors)]
    nonfinite = errors.numel() - finite.numel()
    if finite.numel():
        absolute = finite.abs()
        edges = torch.linspace(float(finite.min()), float(finite.max()) + 1e-6, 11)
        counts = torch.histc(finite, bins=10, min=float(edges[0]), max=float(edges[-1])).tolist()
        summary = {"bias": float(finite.mean()), "median": float(finite.median()), "mae": float(absolute.mean()),
                   "rmse": float(finite.pow(2).mean().sqrt()),
                   "abs_error_quantiles": {f"p{int(q * 100)}": float(absolute.quantile(q)) for q in ERROR_QUANTILES}}
    else:  # one empty bin: there is nothing to draw
        edges, counts = torch.full((2,), math.nan), [0]
        summary = {"bias": math.nan, "median": math.nan, "mae": math.nan, "rmse": math.nan,
                   "abs_error_quantiles": {f"p{int(q * 100)}": math.nan for q in ERROR_QUANTILES}}
    return {
        "count": errors.numel(),
        "nonfinite": nonfinite,
        **summary,
        "histogram": {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]},
        **({"warning": nonfinite_warning(nonfinite, errors.numel(), _left_out(errors.numel() - nonfinite))}
           if nonfinite else {}),
    }


def _left_out(finite: int) -> str:
    if not finite:
        return "no finite one is left to summarise"
    return f"these statistics and the histogram are of the {plural(finite, 'finite one')} only"


def task_unit(task: Task, decoded: Sequence[Any] | None = None) -> str:
    """The unit of a regression task's values: the "unit" its decode gives (what predict shows with each value),
    else its params' `unit` (the built-in regression kind's parameter), else "".

    `decoded`: rows decode already gave; without them, decode runs on one row of zeros.
    """
    if decoded is None:
        try:
            decoded = task.decode(torch.zeros(1, int(task.out_features)))
        except Exception:  # a plugin's decode may raise anything; the unit is only a label
            decoded = None
    first = decoded[0] if isinstance(decoded, Sequence) and len(decoded) else None
    unit = first.get("unit") if isinstance(first, Mapping) else None
    if not isinstance(unit, str) or not unit:
        unit = getattr(getattr(task, "params", None), "unit", "")
    return unit if isinstance(unit, str) else ""


def decoded_values(rows: Sequence[Any] | None) -> Tensor | None:
    """The "value" of each decoded row, as a tensor; None when some row has no number there."""
    if not rows:
        return None
    values = [row.get("value") if isinstance(row, Mapping) else None for row in rows]
    if not all(is_number(v) for v in values):
        return None
    return torch.tensor(values, dtype=torch.float32)


def decode_disagreement(output: Tensor, values: Tensor | None) -> float | None:
    """The typical |decoded value - head output| where decode does more than round the output; else None.

    `values`: what `decoded_values` gives, None included (decode gave no numbers: nothing to compare).

    The median row decides, so a few values that decode clamps (a negative
    age shown as 0) do not count. Rounding for display passes: to 1% of the
    values' size, or to whole units (up to 0.5) for values of 5 or more.
    """
    if values is None or values.shape != output.shape or output.numel() == 0:
        return None
    apart = float((values - output).abs().median())
    scale = float(torch.maximum(values.abs(), output.abs()).median())
    tolerance = max(0.01 * scale, min(0.5, 0.1 * scale), 1e-6)
    return apart if apart > tolerance else None
