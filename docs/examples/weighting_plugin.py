"""A weighting plugin: `ramp`, a curriculum that brings chosen tasks in gradually.

A ramped task's weight grows linearly over the first epochs, 1/(E+1), 2/(E+1),
..., 1, so the shared backbone first learns from the other tasks. It shows the
three things a weighting may do besides weighting: take a per-task parameter
(checked against the run's tasks), keep state in buffers (saved in
checkpoints, so a resumed run continues the schedule), and adapt at
`epoch_end`. Use it in a spec: `weighting: {name: ramp, tasks: [ethnicity], epochs: 3}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import hydranet
from hydranet.core.errors import ComponentError, did_you_mean
from hydranet.core.weighting import WeightedSum


class RampParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=list, description="Tasks whose weight ramps up; default: every task.")
    epochs: int = Field(3, ge=1, description="Epochs E until a ramped task reaches weight 1.")


class Ramp(WeightedSum):
    """Curriculum: the chosen tasks' weights grow linearly from 1/(E+1) to 1 over the first E epochs."""

    description = "Curriculum: chosen tasks' weights grow linearly from 1/(E+1) to 1 over E epochs."
    reference = "Bengio, Louradour, Collobert, Weston. Curriculum Learning. ICML 2009 (the idea; this schedule is ours)."

    def __init__(self, tasks: Sequence[hydranet.Task], params: RampParams | None = None):
        super().__init__(tasks)
        params = params or RampParams()
        for name in params.tasks:
            if name not in self.task_names:
                # A ComponentError's `field` becomes the spec path: "weighting.tasks: unknown task ..."
                raise ComponentError(f"unknown task '{name}';{did_you_mean(name, self.task_names)} "
                                     f"tasks of this spec: {', '.join(self.task_names)}", field="tasks")
        ramped = [name in (params.tasks or self.task_names) for name in self.task_names]
        self.epochs = params.epochs
        # Configuration: moved with the model, rebuilt from the spec, so not saved (persistent=False).
        self.register_buffer("ramped", torch.tensor(ramped), persistent=False)
        # State: saved in checkpoints, so a resumed run picks the schedule up where it stopped.
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def multipliers(self) -> Tensor:
        # Tensor arithmetic only (no .item(), no `if` on a tensor): a step never waits for the GPU.
        progress = ((self.epochs_seen + 1).float() / (self.epochs + 1)).clamp(max=1.0)
        return torch.where(self.ramped, progress, torch.ones_like(progress))

    def epoch_end(self, mean_losses: Tensor) -> None:
        self.epochs_seen.add_(1)


@hydranet.hookimpl
def register_weightings(register: Any) -> None:
    register("ramp", Ramp, params=RampParams, description=Ramp.description)
