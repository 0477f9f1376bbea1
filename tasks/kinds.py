"""Reusable task kinds: regression, binary, multiclass.

A spec declares a new task from a kind with no code:
`{name: smiling, kind: binary, label: smile, class_names: [no, yes]}`.
The UTKFace tasks (`tasks/utkface.py`) are these kinds with preset parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo
from torch import Tensor, nn

from hydranet.core.errors import ComponentError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Task, label_mask
from hydranet.core.metrics import (AUC, F1, Accuracy, BalancedAccuracy, MacroF1, MeanAbsoluteError, Metric, Precision,
                                   Recall, median, predicted_class)
from hydranet.core.values import is_number, parse_number, reads_as_float
from hydranet.core.wording import english_list

CONFIDENT_LOGIT = 10.0  # what a "certain" constant predictor outputs, for baselines

#: The yes/no words a binary task reads (lowercase, after stripping), and what each means.
TRUTH = {"true": True, "yes": True, "y": True, "t": True, "false": False, "no": False, "n": False, "f": False}


class HeadParams(BaseModel):
    """Parameters every kind shares: the record field it reads and the head's shape."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="Record field holding this task's label (e.g. a UTKFace name field or CSV column).")
    hidden: int | None = Field(None, gt=0, description="Hidden width of the head; default: the backbone's feature width.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the head's last layer.")


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
    loss: Literal["l1", "mse", "huber"] = Field("l1", description="Per-sample loss on the standardised value "
                                                                 "(with normalize; else on the label); huber's "
                                                                 "delta is huber_delta.")
    huber_delta: float = Field(1.0, gt=0, allow_inf_nan=False,
                               description="Where the huber loss turns from squared to absolute error: in "
                                           "standard deviations of the training labels when normalize is true, "
                                           "else in the label's units.")
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
            if not reads_as_float(raw):
                return "not a number"
            if math.isfinite(float(str(raw).strip())):  # 1e39: finite in Python, inf as the float32 it trains in
                return "not a finite number as float32 (beyond ±3.4e38)"
            return "not a finite number"
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
        return F.huber_loss(prediction, goal, reduction="none", delta=self.params.huber_delta)

    def metrics(self) -> dict[str, Metric]:
        return {"mae": MeanAbsoluteError()}

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        values = output.detach().float().reshape(output.shape[0], -1)[:, 0].tolist()
        return [{"value": round(v, 3), "unit": self.params.unit} for v in values]

    def trivial_output(self, targets: Tensor) -> Tensor:
        """The median of the labels: the constant with the lowest MAE, the metric this kind reports.

        Not the mean, which is the best constant for squared error only: with a long tail (a few outliers) the
        mean drifts towards them, its MAE rises, and a model that loses to the median would "beat" it. For an
        even count, the midpoint of the two middle labels (`median`), as the run's label summary says it.
        """
        labelled = targets[label_mask(targets)]
        return median(labelled).reshape(1) if labelled.numel() else torch.zeros(1)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean, self.std = float(state["mean"]), float(state["std"])


class ClassificationParams(HeadParams):
    class_names: list[str] | None = Field(
        None, description="Name of each class, in label order. A label is read by class name (case-insensitive); "
                          "when no name is a number, a class index (0, 1, ...) is read too.",
        # what the loader takes, not the strings it makes of them (`_numbers_as_text`): an editor validating a
        # spec against this schema must not flag `class_names: [0, 1]` or `[false, true]`
        json_schema_extra={"anyOf": [{"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "number"},
                                                                              {"type": "boolean"}]}},
                                     {"type": "null"}]})

    @field_validator("class_names", mode="before")
    @classmethod
    def _numbers_as_text(cls, names: Any) -> Any:
        """`class_names: [0, 1, 2]` (unquoted, so YAML numbers) means the names "0", "1", "2".

        Refusing each number with its own "should be a string" sent users quoting five values for no reason:
        a number's text is the name it was meant to be, and a column of such numbers is read by name.
        """
        if not isinstance(names, (list, tuple)):
            return names
        return [str(name).lower() if isinstance(name, bool) else str(name) if is_number(name) else name
                for name in names]

    @field_validator("class_names")
    @classmethod
    def _distinct_names(cls, names: list[str] | None) -> list[str] | None:
        """Labels are read by class name, case-insensitively, and by number when names are numbers:
        two names alike (`Cat` and `cat`, `1` and `1.0`) would be one class."""
        if names is None:
            return names
        if len(names) < 2:
            raise ValueError(f"a classification task needs at least 2 classes, got {len(names)}")
        if any(not name.strip() for name in names):
            raise ValueError("a class name is empty")
        seen: dict[str | float, str] = {}
        for name in names:
            number = parse_number(name)
            key = number if number is not None else name.strip().lower()
            if key in seen:
                how = "the same number" if number is not None else "the same name (labels match class names " \
                                                                  "case-insensitively)"
                raise ValueError(f"class names {seen[key]!r} and {name!r} are {how}; give each class its own")
            seen[key] = name
        return names


def chosen_metrics(names: list[str]) -> list[str]:
    """A kind's `metrics` list: not empty, each metric once (each is a column of metrics.csv)."""
    if not names:
        raise ValueError("name at least one metric; the first is the task's headline")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{english_list([repr(n) for n in twice])} listed twice; name each metric once")
    return names


class ClassificationTask(Task):
    """Shared label parsing and decoding for binary and multiclass tasks.

    A raw label is read, after stripping and case-insensitively, as a class
    name ("Indian"); then, only when no class name is a number, as a class
    index ("3"); then as one of the kind's extra spellings (`spellings`: a
    binary task's yes/no words). Anything else is invalid (reported, and
    treated as missing). With numeric names the index reading is off because
    the two readings collide: names 1-5 on a column of 0-4 would make a 1
    class "1" and a 0 class "1" too; so a value that reads as a number is
    matched to a name by its number ("2.0" is class "2"), never by position.
    """

    problem = "classification"

    def __init__(self, name: str, params: ClassificationParams, num_classes: int):
        super().__init__(name, params.label, hidden=params.hidden, dropout=params.dropout)
        self.params = params
        self.num_classes = num_classes
        self.class_names = list(params.class_names or [str(i) for i in range(num_classes)])
        self._by_name = {n.strip().lower(): i for i, n in enumerate(self.class_names)}  # as labels are read
        #: class by the number its name reads as; not empty = the class names are numbers, and no index is read
        self._by_number = {number: i for i, n in enumerate(params.class_names or ())
                           if (number := parse_number(n)) is not None}
        self._by_spelling = self.spellings()

    def _weight_on(self, device: torch.device, name: str) -> Tensor:
        """The loss weight tensor `self.<name>` (made once, on the host) on `device`, copied there once per
        device: not a tensor made and copied to the device on every step."""
        cache = self.__dict__.setdefault("_weights_on", {})
        if (name, device) not in cache:
            cache[name, device] = getattr(self, name).to(device)
        return cache[name, device]

    @property
    def reads_indices(self) -> bool:
        """Whether a value may be a class index: not when a class name is a number (see the class docstring)."""
        return not self._by_number

    def spellings(self) -> dict[str, int]:
        """Extra lowercase spellings of a class beyond its name and index; none for a kind of its own."""
        return {}

    def parse_label(self, record: Mapping[str, str]) -> int | None:
        raw = record.get(self.label)
        if raw is None:
            return None
        text = str(raw).strip().lower()
        if text in self._by_name:
            return self._by_name[text]
        value = parse_number(text)
        if value is not None:
            if self._by_number:
                return self._by_number.get(value)
            if value == int(value) and 0 <= value < self.num_classes:
                return int(value)
            return None
        return self._by_spelling.get(text)

    def label_problem(self, raw: str) -> str:
        """Why `raw` is no label: the data report lists it, and says it when no value at all is valid."""
        names = ", ".join(self.class_names)
        if self._by_number:
            numeric = [self.class_names[i] for i in self._by_number.values()]
            which = ("they are numbers" if len(numeric) == self.num_classes
                     else f"the name{'s' if len(numeric) > 1 else ''} {english_list(numeric)} "
                          f"{'are numbers' if len(numeric) > 1 else 'is a number'}")
            return f"not one of the class names ({names}); {which}, so no value is read as a class index"
        problem = f"not a class index 0-{self.num_classes - 1}"
        if self.params.class_names is not None:  # the names the user chose say what the data holds; the words
            return f"{problem} or class name ({names})"  # are a convenience, not what to write
        if self._by_spelling:
            return f"{problem} or yes/no word (true/false, yes/no, y/n, t/f)"
        return problem

    def probabilities(self, output: Tensor) -> Tensor:
        raise NotImplementedError

    def decided_classes(self, output: Tensor) -> list[int]:
        """The class each row is predicted as: the most probable one (a binary task's threshold decides there)."""
        return self.probabilities(output).argmax(dim=1).tolist()

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        """Per row the predicted class, the probability of that class (not always of class 1), and every class's."""
        rows = []
        output = output.detach().float()
        for p, best in zip(self.probabilities(output).tolist(), self.decided_classes(output)):
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
    pos_weight: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Weight of the positive class (class 1) in the loss, as BCE's pos_weight: with 1 positive in "
                    "10, a weight of 9 makes the positives weigh as much as the negatives. Default: 1 (unweighted).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing: targets 0 and 1 become "
                                                                "smoothing/2 and 1 - smoothing/2.")
    metrics: list[Literal["accuracy", "f1", "precision", "recall", "balanced_accuracy", "auc"]] = Field(
        ["accuracy"], description="Validation metrics, the first the headline: accuracy, and for a rare class f1, "
                                  "precision and recall (of class 1), balanced_accuracy (mean recall of the two "
                                  "classes) or auc (exact ROC area; one process only). Each is a column of "
                                  "metrics.csv, so a resumed run keeps the list it started with.")

    threshold: float = Field(0.5, gt=0, lt=1, description="Probability of class 1 above which a row is predicted "
                                                          "class 1: by the metrics (all but auc) and predict's class. "
                                                          "Below 0.5, a rare class 1 is predicted more often.")

    _metrics_once = field_validator("metrics")(chosen_metrics)


class BinaryTask(ClassificationTask):
    """Two classes from one logit; BCE with logits; accuracy; reads class names, 0/1, yes/no, true/false."""

    def __init__(self, name: str, params: BinaryParams):
        if params.class_names is not None and len(params.class_names) != 2:
            raise ComponentError(f"a binary task needs exactly 2 class_names, got {len(params.class_names)}",
                                 field="class_names")
        super().__init__(name, params, num_classes=2)
        self.pos_weight = None if params.pos_weight is None else torch.tensor(float(params.pos_weight))

    def spellings(self) -> dict[str, int]:
        """true/yes/y/t and false/no/n/f, as spreadsheets and pandas write a yes/no column.

        Which class each word means: class 1 for the true words, as an index 1 would; but where a class name
        is itself such a word (`class_names: [yes, no]`) the words follow the names, so `true` is class 'yes'
        and `false` the other class.
        A word is left out where it would contradict a class name it begins ('f' with [male, female] is not
        read as false = male). No word is read where the class names say nothing of yes or no (`[cat, dog]`,
        `[male, female]`: is `true` a dog?) or are numbers other than 0 and 1: a guess there would be a silent
        wrong label, while an invalid one is reported.
        """
        names = [name.strip().lower() for name in self.params.class_names or ()]
        meanings = [_truth_of(name) for name in names]
        pinned = {meaning: i for i, meaning in enumerate(meanings) if meaning is not None}
        if names and not pinned:
            return {}
        if self._by_number and None in meanings:
            return {}
        by_truth = {False: 0, True: 1}
        if len(pinned) < sum(meaning is not None for meaning in meanings):  # [yes, y]: both mean true
            return {}
        for meaning, i in pinned.items():  # of two classes, the one not named true is the false one
            by_truth[meaning], by_truth[not meaning] = i, 1 - i
        words = {word: by_truth[truth] for word, truth in TRUTH.items() if truth in by_truth}
        return {word: index for word, index in words.items()
                if not any(name.startswith(word) and i != index for i, name in enumerate(names))}

    @property
    def out_features(self) -> int:
        return 1

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """BCE with logits; pos_weight scales each positive row's loss, and the task's loss stays the mean over
        labelled rows: torch's own convention for pos_weight (its mean does not divide by the weights)."""
        smoothing = self.params.label_smoothing
        goal = target * (1 - smoothing) + smoothing / 2 if smoothing else target
        weight = None if self.pos_weight is None else self._weight_on(output.device, "pos_weight")
        return F.binary_cross_entropy_with_logits(output[:, 0], goal, pos_weight=weight, reduction="none")

    def metrics(self) -> dict[str, Metric]:
        threshold = self.params.threshold
        made = {"accuracy": lambda: Accuracy(threshold), "f1": lambda: F1(threshold),
                "precision": lambda: Precision(threshold), "recall": lambda: Recall(threshold),
                "balanced_accuracy": lambda: BalancedAccuracy(2, threshold), "auc": AUC}
        return {name: made[name]() for name in self.params.metrics}

    def decided_classes(self, output: Tensor) -> list[int]:
        """Class 1 where its probability is above `threshold`: the rows the metrics count as predicted class 1."""
        return predicted_class(output, self.params.threshold).tolist()

    def probabilities(self, output: Tensor) -> Tensor:
        positive = torch.sigmoid(output[:, :1])
        return torch.cat([1 - positive, positive], dim=1)

    def trivial_output(self, targets: Tensor) -> Tensor:
        return torch.tensor([CONFIDENT_LOGIT if self.majority_class(targets) == 1 else -CONFIDENT_LOGIT])

    def constant_outputs(self) -> list[Tensor]:
        """Always class 0, always class 1: the constants each metric's baseline is the best of."""
        return [torch.tensor([-CONFIDENT_LOGIT]), torch.tensor([CONFIDENT_LOGIT])]


def _truth_of(name: str) -> bool | None:
    """What a lowercase class name means as a yes/no answer: 'yes' and '1' true, 'no' and '0' false, else None."""
    if name in TRUTH:
        return TRUTH[name]
    return {0.0: False, 1.0: True}.get(parse_number(name))  # type: ignore[arg-type]


class MulticlassParams(ClassificationParams):
    num_classes: int | None = Field(None, ge=2, description="Number of classes; default: len(class_names).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")
    class_weights: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | \
        dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = Field(
            None, description="Weight of each class in the loss, as cross-entropy's weight: a list of one weight "
                              "per class, in class order, or a mapping of class name to weight (classes left out "
                              "weigh 1). Each row's loss is multiplied by its class's weight, and the task's loss "
                              "is their mean over labelled rows (not divided by the weights' sum, so that batches "
                              "add up exactly). Default: all 1.")
    metrics: list[Literal["accuracy", "macro_f1", "balanced_accuracy"]] = Field(
        ["accuracy", "macro_f1"], description="Validation metrics, the first the headline: accuracy, macro_f1 "
                                              "(the mean F1 of the classes) or balanced_accuracy (the mean recall "
                                              "of the classes). Each is a column of metrics.csv, so a resumed run "
                                              "keeps the list it started with.")

    _metrics_once = field_validator("metrics")(chosen_metrics)

    @model_validator(mode="after")
    def _classes_known(self) -> "MulticlassParams":
        if self.num_classes is None and self.class_names is None:
            raise ValueError("give num_classes or class_names")
        if self.num_classes is not None and self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}")
        return self

    def class_weight_list(self) -> list[float] | None:
        """`class_weights` as one weight per class, in class order; refuses a wrong length or an unknown name."""
        weights = self.class_weights
        if weights is None:
            return None
        names = list(self.class_names or [str(i) for i in range(self.num_classes or 0)])
        if isinstance(weights, list):
            if len(weights) != len(names):
                raise ComponentError(f"class_weights has {len(weights)} weights but the task has {len(names)} "
                                     f"classes; give one per class, in class order, or a mapping of class name to "
                                     "weight", field="class_weights")
            return [float(w) for w in weights]
        by_name = {name.strip().lower(): i for i, name in enumerate(names)}
        unknown = [name for name in weights if name.strip().lower() not in by_name]
        if unknown:
            raise ComponentError(f"class_weights names {english_list([repr(n) for n in unknown])}, not "
                                 f"{'a class' if len(unknown) == 1 else 'classes'} of this task; its classes are "
                                 f"{', '.join(names)}", field="class_weights")
        chosen = [1.0] * len(names)
        for name, weight in weights.items():
            chosen[by_name[name.strip().lower()]] = float(weight)
        return chosen


class MulticlassTask(ClassificationTask):
    """K classes; cross-entropy; accuracy and macro-F1."""

    def __init__(self, name: str, params: MulticlassParams):
        weights = params.class_weight_list()
        super().__init__(name, params, num_classes=params.num_classes or len(params.class_names or ()))
        self.class_weights = None if weights is None else torch.tensor(weights)

    @property
    def out_features(self) -> int:
        return self.num_classes

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy per row, each row multiplied by its class's weight (torch's reduction="none").

        The task's loss is then the plain mean of these over labelled rows, as every task's is, not torch's
        sum(w * l) / sum(w): a mean over rows adds up exactly across batches, processes and the epoch (each
        part weighted by its count), where a per-batch division by the batch's weight sum made the
        validation loss, which picks the best epoch, depend on the batch size.
        """
        weight = None if self.class_weights is None else self._weight_on(output.device, "class_weights")
        return F.cross_entropy(output, target.long(), weight=weight, reduction="none",
                               label_smoothing=self.params.label_smoothing)

    def metrics(self) -> dict[str, Metric]:
        k = self.num_classes
        made = {"accuracy": Accuracy, "macro_f1": lambda: MacroF1(k), "balanced_accuracy": lambda: BalancedAccuracy(k)}
        return {name: made[name]() for name in self.params.metrics}

    def probabilities(self, output: Tensor) -> Tensor:
        return torch.softmax(output, dim=1)

    def trivial_output(self, targets: Tensor) -> Tensor:
        """Always the majority class: the best constant for each of this kind's metrics (accuracy; macro_f1,
        whose constant scores its class's F1 / K, highest for the commonest; balanced_accuracy, 1/K for any),
        so no other constants are offered: K of them would cost K evaluations for nothing."""
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
