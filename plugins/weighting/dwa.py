"""`dwa`: Dynamic Weight Average (Liu, Johns, Davison, CVPR 2019, section 3.3).

    w_i(t) = K * exp(r_i(t-1) / T) / sum_j exp(r_j(t-1) / T),   r_i(t-1) = L_i(t-1) / L_i(t-2)

where L_i(t) is task i's mean training loss over epoch t. A task whose loss
fell more slowly last epoch (ratio near or above 1) gets more weight; T
softens the differences (T -> inf gives all ones). The weights always sum to
K, so the loss scale matches `sum`. For epochs 1 and 2 there is no ratio yet
and w = 1, as in the paper.

The history lives in buffers (the last two epoch losses and the number of
epochs seen) so a checkpoint resumes the schedule exactly, and `epoch_end`
updates it with tensor ops only (torch.where on the count instead of a Python
`if`), so no step or epoch waits on the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Task
from hydranet.core.weighting import WeightedSum

#: A task whose loss reached exactly 0 would make the ratio infinite; dividing by this instead keeps it finite.
MIN_PREVIOUS_LOSS = 1e-8


class DWAParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(2.0, gt=0, allow_inf_nan=False,
                               description="Softness T of the weights; larger T gives weights closer to 1 (paper: 2).")


class DynamicWeightAverage(WeightedSum):
    """Weights from the rate at which each task's epoch loss fell (softmax of loss ratios)."""

    capturable = True
    uniform_epochs = 2  # no loss ratio before two epochs have ended

    description = "Dynamic Weight Average: weights from each task's epoch-to-epoch loss ratio."
    reference = "Liu, Johns, Davison. End-to-End Multi-Task Learning with Attention. CVPR 2019."

    def __init__(self, tasks: Sequence[Task], params: DWAParams | None = None):
        super().__init__(tasks)
        self.temperature = (params or DWAParams()).temperature
        # Row 0: L(t-2), row 1: L(t-1), each the (K,) mean training losses of an epoch.
        self.register_buffer("history", torch.ones(2, self.num_tasks))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def multipliers(self) -> Tensor:
        previous, last = self.history[0], self.history[1]
        ratio = last / previous.clamp_min(MIN_PREVIOUS_LOSS)
        dynamic = self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)
        return torch.where(self.epochs_seen >= self.uniform_epochs, dynamic, torch.ones_like(dynamic))

    def epoch_end(self, mean_losses: Tensor) -> None:
        latest = mean_losses.detach().to(self.history)
        self.history.copy_(torch.stack((self.history[1], latest)))
        self.epochs_seen.add_(1)


@hookimpl
def register_weightings(register: Any) -> None:
    register("dwa", DynamicWeightAverage, params=DWAParams, description=DynamicWeightAverage.description)
