"""Masked metrics that accumulate on the device without host synchronisation.

Why not torchmetrics: its `update` validates arguments and filters rows with
boolean indexing, both of which wait for the GPU on every step. Here every
update is a fixed-shape tensor expression weighted by the label mask, so a
whole epoch runs without a sync and `compute()` is read once at its end.
Rows whose label is missing carry mask 0 and count for nothing. State is
float32 (not float64) because MPS has no float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Metric(nn.Module):
    """A running metric over (output, target, mask) batches; state lives in buffers."""

    higher_is_better: bool = True

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

    One output column is read as a binary logit (positive = class 1); several
    columns as class scores.
    """

    def row_values(self, output: Tensor, target: Tensor) -> Tensor:
        return (predicted_class(output) == target.long()).float()


def predicted_class(output: Tensor) -> Tensor:
    """Class index per row: sign of a single logit, else the arg-max column."""
    if output.shape[-1] == 1:
        return (output[:, 0] > 0).long()
    return output.argmax(dim=-1)


class ConfusionMatrix(Metric):
    """Counts[target, predicted] over labelled rows, built by scatter_add (no sync)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("counts", torch.zeros(num_classes * num_classes, dtype=torch.float32))

    def update(self, output: Tensor, target: Tensor, mask: Tensor) -> None:
        k = self.num_classes
        truth = target.long().clamp(0, k - 1)
        cell = truth * k + predicted_class(output.detach().float()).clamp(0, k - 1)
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
