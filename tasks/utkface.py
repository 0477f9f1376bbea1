"""The UTKFace tasks of the article: age, gender, ethnicity.

Each is a kind from `tasks/kinds.py` with preset parameters, so a spec may
still override any of them (`{name: age, hidden: 128}`).
"""

from __future__ import annotations

from typing import Any

from hydranet.core.hookspecs import hookimpl
from hydranet.tasks.kinds import (
    BinaryParams,
    BinaryTask,
    MulticlassParams,
    MulticlassTask,
    RegressionParams,
    RegressionTask,
    preset,
)

ETHNICITIES = ["White", "Black", "Asian", "Indian", "Others"]
GENDERS = ["male", "female"]

AgeParams = preset(RegressionParams, "AgeParams", label="age", min=0.0, max=120.0, unit="years")
GenderParams = preset(BinaryParams, "GenderParams", label="gender", class_names=GENDERS)
EthnicityParams = preset(MulticlassParams, "EthnicityParams", label="race", num_classes=5, class_names=ETHNICITIES)


@hookimpl
def register_tasks(register: Any) -> None:
    register("age", RegressionTask, params=AgeParams, description="Age in years from a face (regression, L1, MAE).")
    register("gender", BinaryTask, params=GenderParams,
             description="Gender, male or female (binary, BCE, accuracy).")
    register("ethnicity", MulticlassTask, params=EthnicityParams,
             description="Ethnicity: White, Black, Asian, Indian, Others (multiclass, CE, accuracy, macro-F1).")
