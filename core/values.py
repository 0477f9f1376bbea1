"""Type checks for values read from YAML, JSON and checkpoints.

Python's `bool` is a subclass of `int`, so `isinstance(True, int)` holds and a
`true` typed where a number belongs would pass as 1. Every place that reads a
number from a user's file or a saved run asks these two instead. `reads_as_float`
is the same question for text: a label cell, a class name; `parse_number` reads
such text as the finite number a label is.
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


def parse_number(raw: str | None) -> float | None:
    """A finite float from a raw field, or None when absent or not a number: how a label cell is read."""
    if raw is None:
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None
