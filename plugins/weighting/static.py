"""`static`: hand-chosen fixed weights, L = sum_i w_i L_i.

The usual first fix when one task's loss is on a larger scale than the others
(e.g. an L1 age loss in years next to a cross-entropy): a spec says
`weighting: {name: static, weights: {age: 0.1}}` and the other tasks keep
`default`. A zero weight is allowed (it freezes that task's influence on the
shared backbone); all-zero is refused because nothing would train.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from hydranet.core.errors import ComponentError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Task
from hydranet.core.weighting import ConstantWeights, per_task_values

Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class StaticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, Weight] = Field(
        default_factory=dict, description="Weight of each named task (>= 0); tasks not named get `default`.")
    default: Weight = Field(1.0, description="Weight of every task not named in `weights`.")


class Static(ConstantWeights):
    """Fixed per-task weights from the spec."""

    description = "Fixed per-task weights from the spec (tasks not named get `default`)."
    reference = "Standard hand-tuned linear scalarisation of the task losses."

    def __init__(self, tasks: Sequence[Task], params: StaticParams | None = None):
        params = params or StaticParams()
        names = [t.name for t in tasks]
        weights = per_task_values(names, params.weights, params.default, field="weights")
        if names and not any(weights):
            raise ComponentError("every task weight is 0, so nothing would train; give at least one task a "
                                 "positive weight", field="weights" if params.weights else "default")
        super().__init__(tasks, weights)


@hookimpl
def register_weightings(register: Any) -> None:
    register("static", Static, params=StaticParams, description=Static.description)
