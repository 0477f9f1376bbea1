"""The mechanism shared by loss-based weighting strategies.

Most strategies differ only in *how they choose the weights*; the combined
loss is always a weighted sum of the per-task losses. `WeightedSum` owns that
one code path, so a strategy implements `multipliers()` (and, if it needs one,
an extra term in `combine`) and nothing else. `ConstantWeights` is the case
where the weights are fixed for the whole run (sum, static), and
`per_task_values` turns a `{task name: value}` spec parameter into a vector in
task order, rejecting names that are not tasks of this run.

Nothing here reads a tensor's value on the host: the engine calls `combine`
every step and `epoch_end` every epoch with device tensors, and a `.item()`
(or a Python `if` on a tensor) there would make the GPU wait for the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from hydranet.core.errors import ComponentError, did_you_mean
from hydranet.core.interfaces import Task, Weighting


class WeightedSum(Weighting):
    """`combine(losses) = sum_i m_i * L_i`, with the multipliers `m` from `multipliers()`.

    `multipliers()` is the live vector and may carry gradient (uncertainty
    weighting learns it); `weights()` is the same vector detached, which is
    what the per-epoch log and the tests see.
    """

    def multipliers(self) -> Tensor:
        """The (K,) multipliers for this step, on the module's device; may require grad."""
        raise NotImplementedError

    def combine(self, losses: Tensor) -> Tensor:
        # A (K, 1) or (N, K) input would broadcast into a wrong but plausible
        # number; the shape is metadata, so checking it costs no sync.
        if losses.shape != (self.num_tasks,):
            raise ValueError(
                f"{type(self).__name__}.combine expects one loss per task, shape ({self.num_tasks},) "
                f"for tasks {', '.join(self.task_names)}; got shape {tuple(losses.shape)}"
            )
        return (self.multipliers() * losses).sum()

    def weights(self) -> Tensor:
        return self.multipliers().detach()


class ConstantWeights(WeightedSum):
    """Weights fixed when the strategy is built, e.g. all ones or a user's per-task table.

    They are a non-persistent buffer: `.to(device)` moves them with the model,
    but they are configuration, not learned state, so they stay out of
    `state_dict()` (a checkpoint restores them from its embedded spec instead).
    """

    def __init__(self, tasks: Sequence[Task], weights: Sequence[float]):
        super().__init__(tasks)
        if len(weights) != self.num_tasks:
            raise ValueError(f"got {len(weights)} weights for {self.num_tasks} tasks")
        self.register_buffer("fixed", torch.tensor([float(w) for w in weights], dtype=torch.float32), persistent=False)

    def multipliers(self) -> Tensor:
        return self.fixed


def per_task_values(task_names: Sequence[str], values: Mapping[str, float], default: float, field: str) -> list[float]:
    """`values` (task name -> value) in task order, `default` for tasks it leaves out.

    A name that is not a task of this run is almost always a typo; silently
    ignoring it would train with the default weight the user meant to change,
    so it is a `ComponentError` at spec path `<field>.<name>` with a did-you-mean.
    """
    for name in values:
        if name not in task_names:
            raise ComponentError(
                f"unknown task '{name}' in {field};{did_you_mean(name, task_names)} tasks: {', '.join(task_names)}",
                field=f"{field}.{name}",
            )
    return [float(values.get(name, default)) for name in task_names]


__all__ = ["WeightedSum", "ConstantWeights", "per_task_values"]
