"""Reusable task kinds: regression, binary, multiclass.

A spec declares a new task from a kind with no code:
`{name: smiling, kind: binary, label: smile, class_names: [no, yes]}`.
The UTKFace tasks (`tasks/utkface.py`) are these kinds with preset parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo
from torch import Tensor, nn

from hydranet.core.errors import ComponentError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Task, label_mask
from hydranet.core.metrics import Accuracy, MacroF1, MeanAbsoluteError, Metric

CONFIDENT_LOGIT = 10.0  # what a "certain" constant predictor outputs, for baselines


class HeadParams(BaseModel):
    """Parameters every kind shares: the record field it reads and the head's shape."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="Record field holding this task's label (e.g. a UTKFace name field or CSV column).")
    hidden: int | None = Field(None, gt=0, description="Hidden width of the head; default: the backbone's feature width.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the head's last layer.")


def parse_number(raw: str | None) -> float | None:
    """A finite float from a raw field, or None when absent or not a number."""
    if raw is None:
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Rescale(nn.Module):
    """Maps the head's standardised output back to label units (buffers travel with the model)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: Tensor) -> Tensor:
        # In float32 even under bf16 autocast: bf16 keeps 8 bits of mantissa, so an age near 100
        # would come out in steps of half a year, and the MAE would measure that rounding.
        return x.float() * self.std + self.mean


class RegressionParams(HeadParams):
    loss: Literal["l1", "mse", "huber"] = Field("l1", description="Per-sample loss on the standardised value.")
    min: float | None = Field(None, allow_inf_nan=False, description="Labels below this are treated as missing.")
    max: float | None = Field(None, allow_inf_nan=False, description="Labels above this are treated as missing.")
    normalize: bool = Field(True, description="Learn the label standardised by the training mean and std.")
    unit: str = Field("", description="Unit shown with predictions (e.g. years).")


class RegressionTask(Task):
    """A real-valued label; loss on the standardised value, MAE in the label's units."""

    problem = "regression"

    def __init__(self, name: str, params: RegressionParams):
        low, high = params.min, params.max
        if low is not None and high is not None and low >= high:
            # Caught here, not in training: there every label would be out of range and the
            # task would seem to have no labels at all.
            raise ComponentError(f"min ({low:g}) must be below max ({high:g}); labels outside [min, max] "
                                 "count as missing, so no label could be valid", field="min")
        super().__init__(name, params.label, hidden=params.hidden, dropout=params.dropout)
        self.params = params
        self.mean, self.std = 0.0, 1.0

    @property
    def out_features(self) -> int:
        return 1

    def parse_label(self, record: Mapping[str, str]) -> float | None:
        value = parse_number(record.get(self.label))
        if value is None:
            return None
        if (self.params.min is not None and value < self.params.min) or (
            self.params.max is not None and value > self.params.max
        ):
            return None
        return value

    def label_problem(self, raw: str) -> str:
        """Why `raw` is no label: the data report lists it, and says it when no value at all is valid."""
        value = parse_number(raw)
        if value is None:
            return "not a number"
        low, high = self.params.min, self.params.max
        if (low is None or value >= low) and (high is None or value <= high):
            return ""
        if low is not None and high is not None:
            return f"outside [{low:g}, {high:g}] (min/max)"
        return f"below min {low:g}" if low is not None else f"above max {high:g}"

    def fit_targets(self, targets: Tensor) -> None:
        labelled = targets[label_mask(targets)]
        if self.params.normalize and labelled.numel() > 1:
            self.mean = float(labelled.mean())
            self.std = float(labelled.std()) or 1.0

    def build_head(self, in_features: int) -> nn.Module:
        return nn.Sequential(super().build_head(in_features), Rescale(self.mean, self.std))

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        prediction = (output[:, 0] - self.mean) / self.std
        goal = (target - self.mean) / self.std
        if self.params.loss == "l1":
            return (prediction - goal).abs()
        if self.params.loss == "mse":
            return (prediction - goal) ** 2
        return F.huber_loss(prediction, goal, reduction="none")

    def metrics(self) -> dict[str, Metric]:
        return {"mae": MeanAbsoluteError()}

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        values = output.detach().float().reshape(output.shape[0], -1)[:, 0].tolist()
        return [{"value": round(v, 3), "unit": self.params.unit} for v in values]

    def trivial_output(self, targets: Tensor) -> Tensor:
        labelled = targets[label_mask(targets)]
        return labelled.mean().reshape(1) if labelled.numel() else torch.zeros(1)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean, self.std = float(state["mean"]), float(state["std"])


class ClassificationParams(HeadParams):
    class_names: list[str] | None = Field(None, description="Display name of each class, in label order.")

    @field_validator("class_names")
    @classmethod
    def _distinct_names(cls, names: list[str] | None) -> list[str] | None:
        """Labels are read by class name too, case-insensitively: two names alike would be one class."""
        if names is None:
            return names
        if len(names) < 2:
            raise ValueError(f"a classification task needs at least 2 classes, got {len(names)}")
        if any(not name.strip() for name in names):
            raise ValueError("a class name is empty")
        seen: dict[str, str] = {}
        for name in names:
            if name.strip().lower() in seen:
                raise ValueError(f"class names {seen[name.strip().lower()]!r} and {name!r} are the same name "
                                 "(labels match class names case-insensitively); give each class its own")
            seen[name.strip().lower()] = name
        return names


class ClassificationTask(Task):
    """Shared label parsing and decoding for binary and multiclass tasks.

    A raw label is accepted as a class index ("3") or a class name ("Indian",
    case-insensitive); anything else is treated as missing.
    """

    problem = "classification"

    def __init__(self, name: str, params: ClassificationParams, num_classes: int):
        super().__init__(name, params.label, hidden=params.hidden, dropout=params.dropout)
        self.params = params
        self.num_classes = num_classes
        self.class_names = list(params.class_names or [str(i) for i in range(num_classes)])
        self._by_name = {n.strip().lower(): i for i, n in enumerate(self.class_names)}  # as labels are read

    def parse_label(self, record: Mapping[str, str]) -> int | None:
        raw = record.get(self.label)
        if raw is None:
            return None
        text = str(raw).strip()
        if text.lower() in self._by_name:
            return self._by_name[text.lower()]
        value = parse_number(text)
        if value is None or value != int(value) or not 0 <= value < self.num_classes:
            return None
        return int(value)

    def label_problem(self, raw: str) -> str:
        """Why `raw` is no label: the data report lists it, and says it when no value at all is valid."""
        last = self.num_classes - 1
        if self.params.class_names is None:
            return f"not a class index 0-{last}"
        return f"not a class index 0-{last} or class name ({', '.join(self.class_names)})"

    def probabilities(self, output: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        rows = []
        for p in self.probabilities(output.detach().float()).tolist():
            best = max(range(len(p)), key=p.__getitem__)
            rows.append({
                "class": self.class_names[best],
                "probability": round(p[best], 4),
                "probabilities": {n: round(q, 4) for n, q in zip(self.class_names, p)},
            })
        return rows

    def majority_class(self, targets: Tensor) -> int:
        labelled = targets[label_mask(targets)].long()
        if labelled.numel() == 0:
            return 0
        return int(torch.bincount(labelled, minlength=self.num_classes).argmax())


class BinaryParams(ClassificationParams):
    pass


class BinaryTask(ClassificationTask):
    """Two classes from one logit; BCE with logits; accuracy."""

    def __init__(self, name: str, params: BinaryParams):
        if params.class_names is not None and len(params.class_names) != 2:
            raise ComponentError(f"a binary task needs exactly 2 class_names, got {len(params.class_names)}",
                                 field="class_names")
        super().__init__(name, params, num_classes=2)

    @property
    def out_features(self) -> int:
        return 1

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(output[:, 0], target, reduction="none")

    def metrics(self) -> dict[str, Metric]:
        return {"accuracy": Accuracy()}

    def probabilities(self, output: Tensor) -> Tensor:
        positive = torch.sigmoid(output[:, :1])
        return torch.cat([1 - positive, positive], dim=1)

    def trivial_output(self, targets: Tensor) -> Tensor:
        return torch.tensor([CONFIDENT_LOGIT if self.majority_class(targets) == 1 else -CONFIDENT_LOGIT])


class MulticlassParams(ClassificationParams):
    num_classes: int | None = Field(None, ge=2, description="Number of classes; default: len(class_names).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")

    @model_validator(mode="after")
    def _classes_known(self) -> "MulticlassParams":
        if self.num_classes is None and self.class_names is None:
            raise ValueError("give num_classes or class_names")
        if self.num_classes is not None and self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}")
        return self


class MulticlassTask(ClassificationTask):
    """K classes; cross-entropy; accuracy and macro-F1."""

    def __init__(self, name: str, params: MulticlassParams):
        super().__init__(name, params, num_classes=params.num_classes or len(params.class_names or ()))

    @property
    def out_features(self) -> int:
        return self.num_classes

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target.long(), reduction="none", label_smoothing=self.params.label_smoothing)

    def metrics(self) -> dict[str, Metric]:
        return {"accuracy": Accuracy(), "macro_f1": MacroF1(self.num_classes)}

    def probabilities(self, output: Tensor) -> Tensor:
        return torch.softmax(output, dim=1)

    def trivial_output(self, targets: Tensor) -> Tensor:
        output = torch.full((self.num_classes,), -CONFIDENT_LOGIT)
        output[self.majority_class(targets)] = CONFIDENT_LOGIT
        return output


def preset(params: type[BaseModel], model_name: str, **defaults: Any) -> type[BaseModel]:
    """A params model like `params` with new defaults, for tasks that are a kind with presets.

    Each field keeps all its constraints (bounds, finiteness, description); only the default changes.
    """
    fields = {key: (params.model_fields[key].annotation, FieldInfo.merge_field_infos(params.model_fields[key],
                                                                                     default=value))
              for key, value in defaults.items()}
    return create_model(model_name, __base__=params, **fields)


KINDS: dict[str, tuple[type[Task], type[BaseModel]]] = {
    "regression": (RegressionTask, RegressionParams),
    "binary": (BinaryTask, BinaryParams),
    "multiclass": (MulticlassTask, MulticlassParams),
}


@hookimpl
def register_tasks(register: Any) -> None:
    for kind, (task_class, params) in KINDS.items():
        register(kind, task_class, params=params, description=(task_class.__doc__ or "").strip().splitlines()[0])
