"""Masked metrics that accumulate on the device without host synchronisation.

Why not torchmetrics: its `update` validates arguments and filters rows with
boolean indexing, both of which wait for the GPU on every step. Here every
update is a fixed-shape tensor expression weighted by the label mask, so a
whole epoch runs without a sync and `compute()` is read once at its end.
Rows whose label is missing carry mask 0 and count for nothing. State is
float32 (not float64) because MPS has no float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hydranet.core.errors import HydranetError


class Metric(nn.Module):
    """A running metric over (output, target, mask) batches; state lives in buffers."""

    higher_is_better: bool = True
    #: whether its buffers are sums that a distributed run adds up over its processes (evaluate's all_reduce);
    #: a metric that keeps more (AUC's scores) is refused in a run of several processes (`several_processes_problem`)
    sums_over_processes: bool = True

    def update(self, output: Tensor, target: Tensor, mask: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        for buffer in self.buffers():
            buffer.zero_()


class MaskedMean(Metric):
    """Mean of a per-row value over labelled rows; subclasses say what the value is."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros((), dtype=torch.float32))
        self.register_buffer("count", torch.zeros((), dtype=torch.float32))

    def row_values(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, output: Tensor, target: Tensor, mask: Tensor) -> None:
        values = self.row_values(output.detach().float(), target)
        self.total += torch.where(mask, values, 0).sum()
        self.count += mask.sum()

    def compute(self) -> Tensor:
        # NaN when no row was labelled: "no data" must not read as a perfect score.
        return torch.where(self.count > 0, self.total / self.count.clamp_min(1), torch.nan)


class MeanAbsoluteError(MaskedMean):
    """Mean |prediction - target| in the label's own units."""

    higher_is_better = False

    def row_values(self, output: Tensor, target: Tensor) -> Tensor:
        return (output.reshape(output.shape[0], -1)[:, 0] - target).abs()


class Accuracy(MaskedMean):
    """Share of labelled rows whose predicted class equals the target.

    One output column is read as a binary logit (positive = class 1 when its
    probability is above `threshold`); several columns as class scores.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    def row_values(self, output: Tensor, target: Tensor) -> Tensor:
        return (predicted_class(output, self.threshold) == target.long()).float()


def predicted_class(output: Tensor, threshold: float = 0.5) -> Tensor:
    """Class index per row: a single logit is class 1 when its probability is above `threshold`, else the
    arg-max column. The logit is compared with the threshold's logit (no sigmoid: the same rows, exactly)."""
    if output.shape[-1] == 1:
        return (output[:, 0] > threshold_logit(threshold)).long()
    return output.argmax(dim=-1)


def median(values: Tensor) -> Tensor:
    """The median of a 1-D tensor (not empty), the midpoint of the two middle values for an even count, as
    numpy's: torch.median takes the lower one. Every value between the two has the same mean absolute error."""
    ranked = values.float().sort().values
    n = ranked.numel()
    return (ranked[(n - 1) // 2] + ranked[n // 2]) / 2


def threshold_logit(threshold: float) -> float:
    """The logit whose probability is `threshold` (0 for 0.5): sigmoid(x) > t exactly when x > logit(t)."""
    return 0.0 if threshold == 0.5 else math.log(threshold / (1 - threshold))


class ConfusionMatrix(Metric):
    """Counts[target, predicted] over labelled rows, built by scatter_add (no sync)."""

    def __init__(self, num_classes: int, threshold: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.threshold = threshold  # of a single binary logit's probability, as in `predicted_class`
        self.register_buffer("counts", torch.zeros(num_classes * num_classes, dtype=torch.float32))

    def update(self, output: Tensor, target: Tensor, mask: Tensor) -> None:
        k = self.num_classes
        truth = target.long().clamp(0, k - 1)
        cell = truth * k + predicted_class(output.detach().float(), self.threshold).clamp(0, k - 1)
        self.counts.scatter_add_(0, cell, mask.to(self.counts.dtype))

    def matrix(self) -> Tensor:
        return self.counts.view(self.num_classes, self.num_classes)

    def compute(self) -> Tensor:
        return self.matrix()


class MacroF1(ConfusionMatrix):
    """Unweighted mean of per-class F1, over classes that occur in targets or predictions."""

    def compute(self) -> Tensor:
        m = self.matrix()
        true_pos = m.diagonal()
        support = m.sum(dim=1)
        predicted = m.sum(dim=0)
        denominator = support + predicted
        f1 = torch.where(denominator > 0, 2 * true_pos / denominator.clamp_min(1), 0)
        present = (denominator > 0).to(m.dtype)
        return torch.where(present.sum() > 0, (f1 * present).sum() / present.sum().clamp_min(1), torch.nan)


class BalancedAccuracy(ConfusionMatrix):
    """Mean recall over the classes that occur in the targets: 1/K for any constant prediction, whatever the
    class mix (0.5 for a binary task), where plain accuracy rewards always answering the majority class."""

    def compute(self) -> Tensor:
        m = self.matrix()
        support = m.sum(dim=1)
        recall = m.diagonal() / support.clamp_min(1)
        present = (support > 0).to(m.dtype)
        return torch.where(present.sum() > 0, (recall * present).sum() / present.sum().clamp_min(1), torch.nan)


class PositiveClassScore(ConfusionMatrix):
    """A binary task's score of its positive class (class 1) from the 2x2 counts; NaN when nothing was labelled.

    A ratio with nothing to count (no row predicted positive for precision, no positive label for recall) is 0,
    as scikit-learn's zero_division=0: a model that never answers "positive" has found none.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__(2, threshold)

    def ratio(self, true_pos: Tensor, false_pos: Tensor, false_neg: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def compute(self) -> Tensor:
        m = self.matrix()
        numerator, denominator = self.ratio(m[1, 1], m[0, 1], m[1, 0])
        value = torch.where(denominator > 0, numerator / denominator.clamp_min(1), 0)
        return torch.where(m.sum() > 0, value, torch.nan)


class Precision(PositiveClassScore):
    """Share of the rows predicted positive that are positive: TP / (TP + FP)."""

    def ratio(self, true_pos: Tensor, false_pos: Tensor, false_neg: Tensor) -> tuple[Tensor, Tensor]:
        return true_pos, true_pos + false_pos


class Recall(PositiveClassScore):
    """Share of the positive rows predicted positive: TP / (TP + FN)."""

    def ratio(self, true_pos: Tensor, false_pos: Tensor, false_neg: Tensor) -> tuple[Tensor, Tensor]:
        return true_pos, true_pos + false_neg


class F1(PositiveClassScore):
    """F1 of the positive class, the harmonic mean of precision and recall: 2TP / (2TP + FP + FN)."""

    def ratio(self, true_pos: Tensor, false_pos: Tensor, false_neg: Tensor) -> tuple[Tensor, Tensor]:
        return 2 * true_pos, 2 * true_pos + false_pos + false_neg


class AUC(Metric):
    """Area under the ROC curve of a binary logit, exact: the Mann-Whitney U of the labelled rows' scores.

    The share of (positive, negative) pairs whose positive scores higher, ties counting half; 0.5 for any
    constant prediction, and independent of the decision threshold; NaN when a labelled row's score is NaN (no
    rank: a diverged model must not score a perfect 1). Exact needs every score of the epoch, not a
    sum: they are kept on the device, one tensor per batch (no sync), and ranked once in `compute`. Because
    they are not sums, a distributed run could not add its processes' parts as it adds other metrics' buffers
    (each would score only its own rows): the metric refuses to be made in a run of several processes.
    """

    sums_over_processes = False

    def __init__(self) -> None:
        super().__init__()
        world = _world_size()
        if world > 1:
            raise HydranetError(several_processes_problem("auc", world))
        self.register_buffer("anchor", torch.zeros(0))  # no state: says which device the scores go to
        self.parts: list[tuple[Tensor, Tensor, Tensor]] = []

    def update(self, output: Tensor, target: Tensor, mask: Tensor) -> None:
        self.parts.append((output.detach().float().reshape(output.shape[0], -1)[:, 0], target, mask))

    def reset(self) -> None:
        super().reset()
        self.parts = []

    def compute(self) -> Tensor:
        if not self.parts:
            return torch.full((), torch.nan, device=self.anchor.device)
        scores, target, mask = (torch.cat(part) for part in zip(*self.parts))
        positive = (mask & (target == 1)).float()
        negative = (mask & (target == 0)).float()
        ranked, order = scores.sort()
        negatives_below = torch.cat([negative.new_zeros(1), negative[order].cumsum(0)])
        lower = negatives_below[torch.searchsorted(ranked, scores)]  # negatives scoring less than each row
        tied = negatives_below[torch.searchsorted(ranked, scores, right=True)] - lower
        pairs = positive.sum() * negative.sum()
        wins = (positive * (lower + tied / 2)).sum()
        unranked = (mask & scores.isnan()).any()  # sort puts NaN above every score: it would count as a win
        return torch.where((pairs > 0) & ~unranked, wins / pairs.clamp_min(1), torch.nan)


def several_processes_problem(metric: str, processes: int, task: str | None = None) -> str:
    """Why a metric whose state is not sums (`Metric.sums_over_processes`) cannot be used by `processes`."""
    of_task = f" of task '{task}'" if task else ""
    return (f"the '{metric}' metric{of_task} is exact over all validation scores, which a run of {processes} "
            f"processes splits between them; train with --nproc 1, or leave {metric} out of the task's metrics")


def refuse_unsummed_metrics(tasks: Sequence[Any], processes: int) -> None:
    """Refuse, before a run of several `processes` is launched, a task metric that could not be added up over them:
    each process would otherwise load the data and fail the same way in its setup."""
    if processes <= 1:
        return
    for task in tasks:
        for name, metric in task.metrics().items():
            if not metric.sums_over_processes:
                raise HydranetError(several_processes_problem(name, processes, task.name))


def _world_size() -> int:
    """How many processes the run has (1 outside a distributed run)."""
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_world_size()
    return 1
