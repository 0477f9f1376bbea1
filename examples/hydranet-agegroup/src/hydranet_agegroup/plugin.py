"""A hydranet plugin: the `age_group` task and the `inverse_loss` weighting.

hydranet finds this module through the entry point in pyproject.toml
(`[project.entry-points.hydranet] agegroup = "hydranet_agegroup.plugin"`) and
calls its `@hydranet.hookimpl` functions, each with a `register` callback.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

import hydranet
from hydranet.core.weighting import WeightedSum
from hydranet.tasks.kinds import MulticlassParams, MulticlassTask, parse_number


class AgeGroupParams(MulticlassParams):
    label: str = Field("age", description="Record field holding the age in years.")
    class_names: list[str] = Field(["child", "teen", "adult", "senior"], description="One name per age band.")
    boundaries: list[int] = Field([13, 20, 60], description="First age of each band after the first.")

    @model_validator(mode="after")
    def _one_name_per_band(self) -> AgeGroupParams:
        if self.boundaries != sorted(set(self.boundaries)):
            raise ValueError(f"boundaries must be strictly increasing, got {self.boundaries}")
        if len(self.class_names) != len(self.boundaries) + 1:
            raise ValueError(f"{len(self.boundaries)} boundaries make {len(self.boundaries) + 1} bands, "
                             f"but class_names has {len(self.class_names)} names")
        return self


class AgeGroupTask(MulticlassTask):
    """Age band (child, teen, adult, senior) from the age field (multiclass, CE, accuracy, macro-F1)."""

    def __init__(self, name: str, params: AgeGroupParams):
        super().__init__(name, params)  # the multiclass kind's head, loss, metrics and decode
        self.boundaries = list(params.boundaries)

    def parse_label(self, record: Mapping[str, str]) -> int | None:
        age = parse_number(record.get(self.label))
        if age is None or age < 0:
            return None
        return bisect_right(self.boundaries, age)  # 12 -> 0, 13 -> 1, ..., 60 -> 3


class InverseLossParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eps: float = Field(1e-3, gt=0, allow_inf_nan=False, description="Added to each loss before inverting it.")


class InverseLoss(WeightedSum):
    """Weights proportional to 1 / (loss + eps), summing to K: every task contributes about equally.

    The weights come from the detached losses of the current step, so no gradient
    flows through them. A task with no labelled rows in a batch has loss exactly
    0; it gets weight 0 instead of all of it. Everything stays on the device
    (no `.item()`), so a step never waits for the GPU.
    """

    description = "Weights proportional to 1/(loss + eps), summing to K, so every task contributes about equally."

    def __init__(self, tasks: Sequence[hydranet.Task], params: InverseLossParams | None = None):
        super().__init__(tasks)
        self.eps = (params or InverseLossParams()).eps
        self.register_buffer("latest", torch.ones(self.num_tasks))  # the weights of the last step, for the log

    def multipliers(self) -> Tensor:
        return self.latest

    def combine(self, losses: Tensor) -> Tensor:
        if losses.shape == self.latest.shape:  # a wrong shape gets WeightedSum's error below
            detached = losses.detach().float()
            inverse = torch.where(detached > 0, 1.0 / (detached + self.eps), torch.zeros_like(detached))
            self.latest.copy_(self.num_tasks * inverse / inverse.sum().clamp_min(1e-12))
        return super().combine(losses)


@hydranet.hookimpl
def register_tasks(register: Any) -> None:
    register("age_group", AgeGroupTask, params=AgeGroupParams)  # description: the class docstring's first line


@hydranet.hookimpl
def register_weightings(register: Any) -> None:
    register("inverse_loss", InverseLoss, params=InverseLossParams, description=InverseLoss.description)
