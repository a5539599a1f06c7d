"""Value checks shared by the params schema and the methods' own params: one definition of
"an integer", "a finite number in a range", "true or false", so every reader refuses the same
things (bools and text posing as numbers, NaN and inf, strings posing as booleans)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from spt.errors import SuiteError

NO_DEFAULT = object()  # a reader called without a default requires the key


def shown(value: Any) -> str:
    """``repr(value)`` cut to one short line, for messages."""
    text = repr(value)
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


# --- readers of one method's params (``methods.<name>.*``): SuiteErrors naming the key --------


def _raw(params: Mapping[str, Any], key: str, default: Any) -> Any:
    value = params.get(key, default)
    if value is NO_DEFAULT:
        raise TypeError(f"params key {key!r} has no default")
    return value


def _bad(where: str, key: str, expected: str, value: Any) -> SuiteError:
    return SuiteError(
        f"{where}.{key} must be {expected}, got {shown(value)}; fix it in the params file"
    )


def read_int(
    params: Mapping[str, Any],
    where: str,
    key: str,
    default: Any = NO_DEFAULT,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """``params[key]`` (else ``default``) as an int in ``[minimum, maximum]``; a bool, a float
    or a string is a SuiteError naming ``<where>.<key>``."""
    value = _raw(params, key, default)
    if not is_number(value, True, minimum, maximum):
        raise _bad(where, key, range_text("an integer", minimum, maximum, False, False), value)
    return int(value)


def read_float(
    params: Mapping[str, Any],
    where: str,
    key: str,
    default: Any = NO_DEFAULT,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
) -> float:
    """``params[key]`` (else ``default``) as a finite float within the bounds (inclusive, or
    exclusive with ``min_open`` / ``max_open``); an int is accepted, a bool or string is not."""
    value = _raw(params, key, default)
    if not is_number(value, False, minimum, maximum, min_open, max_open):
        expected = range_text("a number", minimum, maximum, min_open, max_open)
        raise _bad(where, key, expected, value)
    return float(value)


def read_bool(params: Mapping[str, Any], where: str, key: str, default: Any = NO_DEFAULT) -> bool:
    """``params[key]`` (else ``default``): only a real boolean; ``"maybe"`` or 1 is an error,
    not silently true."""
    value = _raw(params, key, default)
    if not isinstance(value, bool):
        raise _bad(where, key, "true or false", value)
    return value


def read_choice(
    params: Mapping[str, Any], where: str, key: str, default: Any, choices: Sequence[str]
) -> str:
    """``params[key]`` (else ``default``): one of ``choices``."""
    value = _raw(params, key, default)
    if not isinstance(value, str) or value not in choices:
        raise _bad(where, key, f"one of {', '.join(choices)}", value)
    return value


def read_str(
    params: Mapping[str, Any], where: str, key: str, default: str | None = None
) -> str | None:
    """``params[key]`` (else ``default``): a string (a path, say), or None (null, or empty) for
    "not set"."""
    value = _raw(params, key, default)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(where, key, "a string (or null)", value)
    return value
