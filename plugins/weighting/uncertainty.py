"""`uncertainty`: homoscedastic-uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018).

Each task i gets a learned log-variance s_i = log sigma_i^2; the combined loss is
the negative log-likelihood of the tasks under that noise model:

    regression      0.5 * exp(-s_i) * L_i + 0.5 * s_i     (L/(2 sigma^2) + log sigma)
    classification        exp(-s_i) * L_i + 0.5 * s_i     (L/sigma^2 + log sigma)

Why the forms differ: a Gaussian likelihood puts 1/(2 sigma^2) in front of the
squared error, while the paper's temperature-scaled softmax puts 1/sigma^2 in
front of the cross-entropy (section 3.2, with the paper's approximation
(1/sigma) sum exp(f/sigma^2) ~ (sum exp f)^(1/sigma^2)). In both, log sigma =
0.5 * s. We learn s rather than sigma because it is unconstrained and
exp(-s) can never divide by zero (the paper's section 3.2 does the same). The
task's `problem` attribute picks the form; a regression task keeps the
Gaussian form whatever per-sample loss it uses (L1 in the article), as the
paper's formula and common practice do.

Why it balances tasks: setting d/ds_i = 0 gives exp(-s_i) = 1/L_i (regression)
or 1/(2 L_i) (classification), so in both forms the multiplier settles at
1/(2 L_i): every task contributes the same 0.5 to the weighted sum, whatever
its loss scale. The combined loss may go negative (the 0.5 * s term);
that is expected and not a bug. The s_i are nn.Parameters, so the engine
optimises them with the model (without weight decay) and checkpoints save them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Task
from hydranet.core.weighting import WeightedSum

#: Factor in front of exp(-s) * L for each kind of task likelihood.
LIKELIHOOD_SCALE = {"regression": 0.5, "classification": 1.0}


class UncertaintyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    init: float = Field(0.0, allow_inf_nan=False,
                        description="Initial log-variance s = log sigma^2 of every task (0: sigma = 1).")


class Uncertainty(WeightedSum):
    """Learned per-task log-variances weigh the losses (homoscedastic uncertainty)."""

    capturable = True

    description = "Learned per-task uncertainty (log-variance) weights the losses."
    reference = ("Kendall, Gal, Cipolla. Multi-Task Learning Using Uncertainty to Weigh Losses for "
                 "Scene Geometry and Semantics. CVPR 2018.")

    def __init__(self, tasks: Sequence[Task], params: UncertaintyParams | None = None):
        super().__init__(tasks)
        params = params or UncertaintyParams()
        self.log_var = nn.Parameter(torch.full((self.num_tasks,), float(params.init)))
        # Configuration derived from the tasks, not learned: kept out of state_dict.
        scale = [LIKELIHOOD_SCALE[p] for p in self.problems]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)

    def multipliers(self) -> Tensor:
        return self.scale * torch.exp(-self.log_var)

    def combine(self, losses: Tensor) -> Tensor:
        return super().combine(losses) + 0.5 * self.log_var.sum()


@hookimpl
def register_weightings(register: Any) -> None:
    register("uncertainty", Uncertainty, params=UncertaintyParams, description=Uncertainty.description,
             aliases=["uw"])  # LibMTL's UW
