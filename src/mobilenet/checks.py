"""Type tests for user-given values: ``bool`` is an ``int`` to Python, but ``True`` is not an epoch count."""

from __future__ import annotations

import math
from typing import Any


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, NaN, infinity, or an int too large for a float)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
