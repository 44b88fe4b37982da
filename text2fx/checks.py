"""Checks of single values shared by the options layer and the recipe: one rule and one message each.

Torch-free. Each raises `InputError` (the options layer turns it into a `UsageError`) with a one-line message
naming the value, so the command line and the Python API refuse the same things with the same words.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from text2fx.errors import InputError


def integer(value: Any, name: str, minimum: int | None = None) -> int:
    """`value` as a Python int (anything `operator.index` accepts; a bool or a float, even 3.0, is refused),
    at least `minimum`."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise InputError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {number}")
    return number


def real(value: Any, name: str) -> float:
    """`value` as a finite float (any real number; a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {number}")
    return number
