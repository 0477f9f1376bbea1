"""A task plugin: `decade`, a person's age decade (0-9, 10-19, ..., 90+) as ten classes.

It implements the whole `hydranet.Task` contract by hand (a head, a label
parser, a per-sample loss, metrics, a decoder and a baseline) and adds a
metric of its own. Publish it with an entry point in your pyproject.toml:

    [project.entry-points.hydranet]
    decade = "my_package.task_plugin"

then use it in a spec: `tasks: [age, gender, decade]`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

import hydranet
from hydranet.core.metrics import Accuracy, MaskedMean

DECADES = 10  # 0-9, 10-19, ..., 80-89, 90+


class DecadeParams(BaseModel):
    """What a spec may set: `{name: decade, label: years, hidden: 64}`."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is a spec error with a did-you-mean

    label: str = Field("age", description="Record field holding the age in years.")
    hidden: int = Field(128, gt=0, description="Hidden width of the head.")


class WithinOneDecade(MaskedMean):
    """Share of labelled rows whose predicted decade is at most one away from the true one.

    `MaskedMean` accumulates on the device and skips rows without a label; a
    metric only says what each row's value is.
    """

    def row_values(self, output: Tensor, target: Tensor) -> Tensor:
        return ((output.argmax(dim=1) - target.long()).abs() <= 1).float()


class DecadeTask(hydranet.Task):
    """Age decade (0-9, ..., 90+), ten classes: cross-entropy, accuracy, within-one-decade accuracy."""

    problem = "classification"  # tells likelihood-based weightings (uncertainty) which loss form to use

    def __init__(self, name: str, params: DecadeParams):
        super().__init__(name, params.label, hidden=params.hidden)

    @property
    def out_features(self) -> int:
        return DECADES

    def build_head(self, in_features: int) -> nn.Module:
        # Optional: the default head is Linear(F, hidden) -> ReLU -> Linear(hidden, out_features).
        return nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, self.hidden), nn.GELU(),
                             nn.Linear(self.hidden, DECADES))

    def parse_label(self, record: Mapping[str, str]) -> int | None:
        try:
            age = float(record[self.label])
        except (KeyError, ValueError):
            return None  # no label: this sample still trains every other task
        if not math.isfinite(age) or age < 0:
            return None
        return min(int(age // 10), DECADES - 1)

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        # One value per row; hydranet masks the rows without a label and averages the rest.
        return F.cross_entropy(output, target.long(), reduction="none")

    def metrics(self) -> dict[str, hydranet.Metric]:
        return {"accuracy": Accuracy(), "within_one": WithinOneDecade()}  # the first is the headline

    def decode(self, output: Tensor) -> list[dict[str, Any]]:
        probabilities = torch.softmax(output.detach().float(), dim=1)
        best = probabilities.argmax(dim=1).tolist()
        return [{"class": decade_name(d), "probability": round(float(probabilities[i, d]), 4)}
                for i, d in enumerate(best)]

    def trivial_output(self, targets: Tensor) -> Tensor:
        """The best constant prediction (the most common decade), shown as the baseline."""
        labelled = targets[~torch.isnan(targets)].long()
        output = torch.full((DECADES,), -10.0)
        output[torch.bincount(labelled, minlength=DECADES).argmax()] = 10.0
        return output


def decade_name(decade: int) -> str:
    return "90+" if decade == DECADES - 1 else f"{10 * decade}-{10 * decade + 9}"


@hydranet.hookimpl
def register_tasks(register: Any) -> None:
    register("decade", DecadeTask, params=DecadeParams)  # description: the class docstring's first line
