"""Type checks for values read from YAML, JSON and checkpoints.

Python's `bool` is a subclass of `int`, so `isinstance(True, int)` holds and a
`true` typed where a number belongs would pass as 1. Every place that reads a
number from a user's file or a saved run asks these two instead. `reads_as_float`
is the same question for text: a label cell, a class name; `parse_number` reads
such text as the finite number a label is: finite as float32, the type labels
are trained in, so `1e39` is no more a label than `inf`.
"""

from __future__ import annotations

import math
from typing import Any


def is_number(value: Any) -> bool:
    """An int or a float, but not a bool (NaN and inf count: callers that need finite say so)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole_number(value: Any) -> bool:
    """An int, but not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def reads_as_float(text: Any) -> bool:
    """Whether `str(text)` reads as a float at all, spaces around it allowed ('1', ' 1.0', 'inf' and '1e400' do,
    though not as finite numbers): what tells a number-like label from a word."""
    try:
        float(str(text))
    except ValueError:
        return False
    return True


#: The largest float32 (3.4028234663852886e38): labels are float32, and a value beyond it is inf there.
FLOAT32_MAX = 3.4028234663852886e38


def finite_as_float32(value: float) -> bool:
    """Whether `value` is a finite number in float32: not NaN, not inf, and not beyond ±FLOAT32_MAX."""
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def parse_number(raw: str | None) -> float | None:
    """A float from a raw field that is finite as float32, or None when absent or not one: how a label cell is
    read. '1e39' and '1e300' are None like 'inf': as float32 labels they would be inf."""
    if raw is None:
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if finite_as_float32(value) else None
