"""`sum`: the article's L = sum_i L_i, every task weighted 1.

The baseline every other weighting is compared against. It has no parameters,
so a spec key under `weighting: {name: sum}` is reported as an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Task
from hydranet.core.weighting import ConstantWeights


class Sum(ConstantWeights):
    """Plain sum of the task losses (all weights 1)."""

    description = "Plain sum of the task losses, every weight 1 (the article's loss)."
    reference = "DeepHub IMBA, 'Pytorch创建多任务学习模型' (2022): loss = loss_1 + loss_2 + loss_3."

    def __init__(self, tasks: Sequence[Task], params: None = None):
        super().__init__(tasks, [1.0] * len(tasks))


@hookimpl
def register_weightings(register: Any) -> None:
    register("sum", Sum, description=Sum.description, aliases=["ew", "equal"])  # LibMTL's EW
