"""The value checks every reader of settings shares: one definition of "an integer" and "a
finite number in a range" (bools and text posing as numbers, NaN and inf refused), used by the
params schema (and through it by every method's params) and by the training engine."""

from __future__ import annotations

import math
import numbers
import reprlib
from typing import Any

# A value shown in a message is cut before it is built: a YAML alias bomb or a deep nesting must
# not be expanded by repr() just to say that it is wrong.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 3, 4, 4, 4
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 40, 40, 40


def shown(value: Any) -> str:
    """``repr(value)`` cut to one short line, for messages (bounded however large ``value`` is)."""
    text = _SHORT.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def range_text(noun: str, minimum, maximum, min_open: bool, max_open: bool) -> str:
    """``a number in (0, 1]``, ``an integer >= 1``: the expectation a message states."""
    if minimum is not None and maximum is not None:
        low, high = "(" if min_open else "[", ")" if max_open else "]"
        return f"{noun} in {low}{minimum}, {maximum}{high}"
    if minimum is not None:
        return f"{noun} {'>' if min_open else '>='} {minimum}"
    if maximum is not None:
        return f"{noun} {'<' if max_open else '<='} {maximum}"
    return noun


def in_range(value, minimum, maximum, min_open: bool, max_open: bool) -> bool:
    if minimum is not None and (value <= minimum if min_open else value < minimum):
        return False
    return maximum is None or (value < maximum if max_open else value <= maximum)


def is_number(
    value: Any,
    integer: bool,
    minimum=None,
    maximum=None,
    min_open: bool = False,
    max_open: bool = False,
) -> bool:
    """Whether ``value`` is an integer (``integer``) or a finite real number within the bounds.
    Bools and text are not numbers, though Python and YAML would let them pass as such."""
    kind = numbers.Integral if integer else numbers.Real
    return (
        isinstance(value, kind)
        and not isinstance(value, bool)
        and (integer or math.isfinite(value))
        and in_range(value, minimum, maximum, min_open, max_open)
    )
