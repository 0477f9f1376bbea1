"""`rlw`: Random Loss Weighting (Lin, Ye, Zhang, Tsang, TMLR 2022).

Every training step draws fresh weights and uses the plain weighted sum:

    lambda~ ~ p(lambda~)            (K values, one per task)
    lambda  = softmax(lambda~)      (on the simplex: lambda_i > 0, sum_i lambda_i = 1)
    L       = sum_i lambda_i * L_i

with p one of

    normal      N(0, I)                   the paper's recommended variant and LibMTL's default
    dirichlet   Dir(1, ..., 1)            a flat draw from the simplex, then the softmax
    uniform     U(0, 1) per task

The softmax is applied to every distribution, as the authors' own code does (the
earlier LibMTL `RLW` with its `dist` option: `Uniform`, `Normal` and `Dirichlet`
draws all go through `F.softmax`; today's LibMTL keeps only the normal one); for
`normal` it is what makes the weights positive. For `dirichlet` and `uniform` it
also squeezes them towards 1/K: a raw draw in [0, 1]^K puts each weight between
1/(1 + (K - 1) e) and e/(e + K - 1) (0.16 to 0.58 for K = 3), and a Dirichlet draw,
which sums to 1, between 1/(e + K - 1) and e/(e + K - 1) (0.21 to 0.58 for K = 3),
so these two are much milder than `normal`. Every distribution gives weights that
sum to 1. The point of the paper is that such random weights are a strong baseline:
in expectation every task gets 1/K, and the noise helps escape bad local minima.

The draws come from a generator this module owns, on the device of its
buffers, re-seeded each step from (seed, step number): deterministic given the
run seed, identical on every DDP rank (so all ranks weight their losses the
same way), and exactly resumable from a checkpoint, which stores the number of
steps drawn. The seed defaults to `torch.initial_seed()` when the weighting is
built, which the engine has just set from `train.seed`. The step number is a
Python int, never read from the device, so drawing costs no synchronisation.
`weights()` returns the last step's weights (1/K before the first step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import StepContext, Task
from hydranet.core.weighting import WeightedSum

Distribution = Literal["normal", "dirichlet", "uniform"]

_MASK64 = (1 << 64) - 1


def step_seed(seed: int, step: int) -> int:
    """SplitMix64 of (seed, step): a well-mixed, independent generator seed for each step.

    Mixing (rather than seed + step) keeps run s's step t+1 from replaying run s+1's step t.
    """
    z = (seed + (step + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


class RLWParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    distribution: Distribution = Field(
        "normal", description="Distribution of the raw weights before the softmax: normal N(0, I) (the paper's "
                              "recommended variant), dirichlet Dir(1, ..., 1), or uniform U(0, 1).")
    seed: int | None = Field(
        None, ge=0, description="Seed of the weight draws; default: the run's seed (torch.initial_seed() when "
                                "the weighting is built).")


class RandomLossWeighting(WeightedSum):
    """Fresh random weights on the simplex every step (softmax of a random draw)."""

    description = "Random Loss Weighting: fresh random weights (softmax of a draw) every step."
    reference = ("Lin, Ye, Zhang, Tsang. Reasonable Effectiveness of Random Weighting: A Litmus Test for "
                 "Multi-Task Learning. TMLR 2022.")

    def __init__(self, tasks: Sequence[Task], params: RLWParams | None = None):
        super().__init__(tasks)
        params = params or RLWParams()
        self.distribution: Distribution = params.distribution
        self.seed = params.seed if params.seed is not None else torch.initial_seed()
        #: Steps drawn so far; a host int (saved through `get_extra_state`), so seeding never reads the device.
        self.draws = 0
        self._generators: dict[torch.device, torch.Generator] = {}
        self.register_buffer("last_weights", torch.full((self.num_tasks,), 1.0 / max(self.num_tasks, 1)))

    def multipliers(self) -> Tensor:
        return self.last_weights

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if device.type == "meta":  # meta tensors hold no values, so there is nothing to seed
            return None
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        return generator.manual_seed(step_seed(self.seed, self.draws))

    def draw(self) -> Tensor:
        """The next step's (K,) weights, drawn on the device; advances the step count."""
        device, k = self.last_weights.device, self.num_tasks
        generator = self._generator(device)
        if self.distribution == "normal":
            raw = torch.randn(k, generator=generator, device=device)
        else:
            raw = torch.rand(k, generator=generator, device=device)
            if self.distribution == "dirichlet":
                # Dir(1, ..., 1) = normalised Exp(1) draws; 1 - u lies in (0, 1], so the log is finite.
                exponential = -torch.log1p(-raw)
                raw = exponential / exponential.sum().clamp_min(torch.finfo(raw.dtype).tiny)
        self.draws += 1
        return torch.softmax(raw, dim=0)

    def backward(self, losses: Tensor, context: StepContext | None = None) -> Tensor:
        self.last_weights.copy_(self.draw())
        return super().backward(losses, context)

    def get_extra_state(self) -> dict[str, int]:
        return {"draws": self.draws}

    def set_extra_state(self, state: Any) -> None:
        self.draws = int(state["draws"])


@hookimpl
def register_weightings(register: Any) -> None:
    register("rlw", RandomLossWeighting, params=RLWParams, description=RandomLossWeighting.description)
