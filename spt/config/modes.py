"""The names of the prompt modes, checked where a setting names them (the schema, at load) and
where a prompt is built (:mod:`spt.harness.prompts`): one grammar for both."""

from __future__ import annotations

import re

FIXED_MODES = ("box", "points-pn", "coarse", "coarse-box")
_POINTS_MODE = re.compile(r"points-([1-9][0-9]*)")
MODES_TEXT = "box, points-K (K >= 1), points-pn, coarse or coarse-box"


def is_mode(mode: object) -> bool:
    """Whether ``mode`` names a prompt mode: box, points-K (K >= 1), points-pn, coarse or
    coarse-box."""
    return isinstance(mode, str) and (mode in FIXED_MODES or bool(_POINTS_MODE.fullmatch(mode)))


def mode_problems(name: str, modes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(field, what it must be) for the first unknown mode of ``modes``, for ``problems()``."""
    for mode in modes:
        if not is_mode(mode):
            return [(name, f"names an unknown prompt mode {mode!r}: use {MODES_TEXT}")]
    repeated = sorted({mode for mode in modes if modes.count(mode) > 1})
    if repeated:  # evaluation would score the mode twice, its records duplicated
        return [(name, f"lists {', '.join(repeated)} more than once; list each mode once")]
    return []
