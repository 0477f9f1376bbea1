"""The contracts between the engine and its plugins: Task, Backbone, Weighting, Dataset.

The engine only ever talks to these; a concrete task, backbone, weighting or
dataset arrives from a plugin's `register_*` hook.

Targets travel as one float32 tensor per task with NaN where a sample has no
label for that task. That one convention lets every loss and metric mask
missing labels with fixed-shape tensor operations (no boolean indexing, so no
host synchronisation), and lets a sample without, say, a race label still
train age and gender.
"""

from __future__ import annotations

import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from PIL import Image
from torch import Tensor, nn

from hydranet.core.errors import shown
from hydranet.core.loss_checks import CHECKED, check_losses, check_overrides
from hydranet.core.metrics import Metric
from hydranet.core.plugin_calls import PluginCall, provenance, shape_problem

Problem = Literal["regression", "classification"]
PROBLEMS: tuple[str, ...] = typing.get_args(Problem)


def label_mask(target: Tensor) -> Tensor:
    """True where a row has a label (targets use NaN for "missing")."""
    return ~torch.isnan(target)


def labels_or_zero(target: Tensor, mask: Tensor) -> Tensor:
    """`target` with its missing (NaN) rows set to 0: what `per_sample_loss` sees, so that it never meets a NaN."""
    return torch.where(mask, target, torch.zeros_like(target))


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over rows where `mask` holds; 0 (with zero gradient) when none do."""
    zeroed = torch.where(mask, values, torch.zeros_like(values))
    return zeroed.sum() / mask.sum().clamp_min(1).to(values.dtype)


def mlp_head(in_features: int, out_features: int, hidden: int | None = None, dropout: float = 0.0) -> nn.Sequential:
    """The article's head, `Linear(F, H) -> ReLU -> Linear(H, k)`, with H = F by default."""
    hidden = hidden or in_features
    layers: list[nn.Module] = [nn.Linear(in_features, hidden), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, out_features))
    return nn.Sequential(*layers)


class Task(ABC):
    """One prediction problem: a head, a label parser, a loss, metrics and a decoder.

    Subclasses give `out_features`, `parse_label`, `per_sample_loss`, `metrics`
    and `decode`; masking of missing labels is done here once for every task.
    """

    #: Tells likelihood-based weightings (uncertainty) which form of the loss to use. Required, with no
    #: default: a classification task that forgot it would silently be weighted as a regression; a task
    #: built from a spec without it is refused, naming its class (`problem_of_task`).
    problem: ClassVar[Problem]

    def __init__(self, name: str, label: str, *, hidden: int | None = None, dropout: float = 0.0):
        self.name = name
        self.label = label
        self.hidden = hidden
        self.dropout = dropout

    @property
    @abstractmethod
    def out_features(self) -> int:
        """Width of the head's output."""

    def build_head(self, in_features: int) -> nn.Module:
        """The head on top of the shared features (override for a custom architecture)."""
        return mlp_head(in_features, self.out_features, self.hidden, self.dropout)

    @abstractmethod
    def parse_label(self, record: Mapping[str, str]) -> float | int | None:
        """The numeric label of one sample's raw fields, or None when missing or invalid."""

    @abstractmethod
    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Loss per row, shape (N,); `target` has no NaN here (missing rows are masked after)."""

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the rows that have a label."""
        mask = label_mask(target)
        return masked_mean(self.per_sample_loss(output.float(), labels_or_zero(target, mask)), mask)

    @abstractmethod
    def metrics(self) -> dict[str, Metric]:
        """Fresh metric accumulators, keyed by metric name; the first one is the headline."""

    @abstractmethod
    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        """Human-readable predictions, one dict per row (class name and probability, value...)."""

    def label_problem(self, raw: str) -> str:
        """Why `raw`, which `parse_label` refused, is not a valid label; shown in the invalid-label list.

        Default: no reason. Without one, a user who sees `age='200'` listed has
        to guess whether the task wanted a number, a range or a class name.
        """
        return ""

    def fit_targets(self, targets: Tensor) -> None:
        """See the training labels (NaN = missing) before the head is built; default: nothing."""

    def trivial_output(self, targets: Tensor) -> Tensor:
        """Head output of the best constant predictor on these labels: the baseline to beat."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Plain values learned in `fit_targets`, saved in checkpoints."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, label={self.label!r})"


class Backbone(nn.Module):
    """Maps images (N, 3, H, W) to flat features (N, out_features)."""

    out_features: int


@dataclass
class StepContext:
    """What a weighting may use besides the losses when it runs a step's backward.

    `features` is the shared representation (N, F) of this batch, part of the
    autograd graph (the heads read it, the backbone produced it); gradients of
    the losses with respect to it cost only a backward through the heads.
    The parameter lists let gradient-based weightings work in parameter space.
    """

    features: Tensor | None
    shared_parameters: Sequence[nn.Parameter]
    head_parameters: Sequence[nn.Parameter]
    last_shared_parameters: Sequence[nn.Parameter]
    #: Sums a tensor over the processes of a distributed run, in place (the identity in one process).
    #: A weighting that combines per-task gradients must reduce them before combining; see
    #: `hydranet.core.distributed` for what each rank's tensors hold.
    all_reduce: Callable[[Tensor], Tensor] = field(default=lambda tensor: tensor)
    world_size: int = 1


class Weighting(nn.Module):
    """Turns per-task losses into the one update, and may learn or adapt as it goes.

    Loss-based weightings implement `combine`; gradient-based ones override
    `backward` (see `hydranet.core.weighting.GradientWeighting`). State
    (learned parameters, buffers) is an nn.Module's, so it is saved in
    checkpoints and moved to the device with the model; parameters are
    optimised alongside the model's.
    """

    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    #: True when `backward` reads `context.features`: the engine then runs the backbone and the
    #: heads as two steps, so the representation is a tensor the losses' gradients can stop at.
    needs_features: ClassVar[bool] = False
    #: True when `backward` and `epoch_end` keep all state in tensors updated in place and never read a tensor
    #: on the host or draw from a Python-side generator: the engine may then record the whole training step
    #: as one CUDA graph and replay it (train.cuda_graphs: step; see `hydranet.core.capture`).
    capturable: ClassVar[bool] = False
    #: Epochs at the start of a run whose weights are all 1 while the weighting gathers what it adapts from
    #: (DWA's loss ratios need two epochs): a run of no more epochs trains exactly as `sum`, and says so.
    uniform_epochs: ClassVar[int] = 0

    def __init__(self, tasks: Sequence[Task]):
        super().__init__()
        self.task_names = [t.name for t in tasks]
        self.problems = [t.problem for t in tasks]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's own `combine`, `backward` and `epoch_end` check their losses first (`loss_checks`)."""
        super().__init_subclass__(**kwargs)
        check_overrides(cls)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def combine(self, losses: Tensor) -> Tensor:
        """One scalar from the (K,) per-task losses, in task order."""
        check_losses(self, losses, "combine")
        raise NotImplementedError(
            f"{type(self).__qualname__} does not implement combine(losses): return one scalar loss from the (K,) "
            "per-task losses, e.g. (self.weights() * losses).sum(); or override backward() (a gradient method)")

    def backward(self, losses: Tensor, context: StepContext | None = None) -> Tensor:
        """Run the backward pass for this step and return the (detached) combined loss."""
        check_losses(self, losses, "backward")
        total = self.combine(losses)
        if getattr(total, "shape", None) != ():  # metadata, no sync; a (K,) total fails in backward naming nothing
            raise PluginCall("the combine of", provenance(self, "weighting"),
                             "Return the one combined loss, a scalar, from the weighting's combine; or use another "
                             "weighting").fault(shape_problem(total, (), f"{self.num_tasks} task losses") or "")
        total.backward()
        return total.detach()

    def weights(self) -> Tensor:
        """The (K,) weights this step applied, read after its backward; the epoch's mean is logged. Tensor ops only."""
        raise NotImplementedError(
            f"{type(self).__qualname__} does not implement weights(): return the (K,) weights this step applied, "
            "one per task in task order, as a tensor (torch.ones(self.num_tasks) for a plain sum)")

    def epoch_end(self, mean_losses: Tensor) -> None:
        """Called with the epoch's (K,) mean training losses; epoch-level weightings adapt here."""
        check_losses(self, mean_losses, "epoch_end", CHECKED["epoch_end"])


@dataclass(frozen=True)
class Sample:
    """One image and the raw label fields that came with it.

    `origin` says where the record was read, when the dataset knows (the folder dataset: `labels.csv:12`):
    someone fixing an invalid label edits that line, not the image, so the data report names both. It is
    optional, so a plugin's dataset that builds `Sample(source, record)` works as before; and it takes no part
    in equality, nor in the decode cache's key (which hashes the sources), so the same images and labels read
    from a CSV with an extra blank line are the same samples.
    """

    source: str
    record: Mapping[str, str]
    origin: str | None = field(default=None, compare=False)


class Dataset(ABC):
    """Lists samples (image source plus raw label fields) and opens their images.

    Entries that cannot become a sample (a malformed file name, a CSV row with
    no file) are passed to `report_problem`; the engine lists them and fails on
    them in strict mode.
    """

    #: True for a dataset that draws its images into `root` rather than reading a user's folder (as
    #: `synthetic` does): `hydranet eval --data DIR` then reads DIR as UTKFace instead of drawing into it.
    draws_images: ClassVar[bool] = False

    @abstractmethod
    def samples(self) -> list[Sample]:
        """All usable samples, in a stable order."""

    def open_image(self, source: str) -> Image.Image:
        """Open one image (override for sources that are not files)."""
        return Image.open(source)

    @property
    def problems(self) -> list[tuple[str, str]]:
        """(source, reason) for each entry that was skipped while listing samples."""
        return self.__dict__.setdefault("_problems", [])

    def report_problem(self, source: str, reason: str) -> None:
        self.problems.append((source, reason))

    @property
    def notes(self) -> list[str]:
        """What listing did that the user should know but that skipped nothing (a CSV name matched on disk in
        another Unicode normalisation, say). Training's data report adds these lines to its notes."""
        return self.__dict__.setdefault("_notes", [])


def logit(p: float) -> float:
    """log(p / (1 - p)), clamped away from infinity."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def problem_of_task(task: Task) -> str | None:
    """Why `task` cannot be used as it is (it does not say its `problem`, or says something else), or None."""
    problem = getattr(task, "problem", None)
    if problem in PROBLEMS:
        return None
    cls = type(task)
    has = "has no `problem`" if problem is None else f"has problem = {shown(problem)}"
    return (f"{has}: set the class attribute problem = 'regression' or 'classification' in "
            f"{cls.__module__}.{cls.__qualname__} (likelihood-based weightings such as uncertainty pick the form "
            "of the loss by it)")
