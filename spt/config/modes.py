"""The names of the prompt modes, checked where a setting names them (the schema, at load) and
where a prompt is built (:mod:`spt.harness.prompts`): one grammar for both.

A mode is a base mode (box, points-K, points-pn, coarse, coarse-box), optionally followed by
``+<family><level>``, a prompt perturbation of the robustness analysis (docs/analyses.md):

- ``box+shift<f>``: the box's centre moved by up to f x its side, per axis (box, coarse-box);
- ``box+scale<f>``: each side scaled by a factor in [1 - f, 1 + f] about the centre;
- ``box+hqsam<s>``: HQ-SAM's training box noise at scale s (centre by up to s x half the side,
  side by up to s x the side; HQ-SAM trains at s = 1);
- ``points-K+click<d>``: every click moved by exactly d px of a 1024-px input (scaled to the
  model's input side), in a random direction (points-K, points-pn);
- ``coarse+tol<e>``: the coarse polygons fitted with tolerance e x perimeter instead of the
  protocol's 0.05 (coarse, coarse-box).

Level 0 (or ``tol0.05``) is the clean prompt, bit for bit.
"""

from __future__ import annotations

import re

FIXED_MODES = ("box", "points-pn", "coarse", "coarse-box")
_POINTS_MODE = re.compile(r"points-([1-9][0-9]*)")
_PERTURBED = re.compile(r"(?P<base>[a-z0-9-]+)\+(?P<family>[a-z]+)(?P<level>[0-9]+(\.[0-9]+)?)")
#: Perturbation family -> the base modes it applies to.
PERTURBATION_BASES = {
    "shift": ("box", "coarse-box"),
    "scale": ("box", "coarse-box"),
    "hqsam": ("box", "coarse-box"),
    "click": ("points-K", "points-pn"),
    "tol": ("coarse", "coarse-box"),
}
MODES_TEXT = (
    "box, points-K (K >= 1), points-pn, coarse or coarse-box, optionally perturbed as "
    "<mode>+shift<f>, +scale<f>, +hqsam<s>, +click<d> or +tol<e> (docs/analyses.md)"
)


def _is_base(mode: object) -> bool:
    return isinstance(mode, str) and (mode in FIXED_MODES or bool(_POINTS_MODE.fullmatch(mode)))


def _base_kind(base: str) -> str:
    return "points-K" if _POINTS_MODE.fullmatch(base) else base


def split_mode(mode: str) -> tuple[str, str | None, float]:
    """``mode`` -> (base mode, perturbation family or None, level); ValueError if not a mode."""
    if _is_base(mode):
        return mode, None, 0.0
    match = _PERTURBED.fullmatch(mode) if isinstance(mode, str) else None
    if match is None or not _is_base(match["base"]):
        raise ValueError(f"not a prompt mode: {mode!r}")
    base, family, level = match["base"], match["family"], float(match["level"])
    if _base_kind(base) not in PERTURBATION_BASES.get(family, ()):
        raise ValueError(f"perturbation {family!r} does not apply to {base!r}")
    if family == "tol" and not 0 < level <= 1:
        raise ValueError(f"tol level must lie in (0, 1], got {level}")
    return base, family, level


def perturbed_mode(base: str, family: str, level: float) -> str:
    """The mode string of ``base`` under ``family`` at ``level`` (shortest decimal form)."""
    text = f"{float(level):.6f}".rstrip("0").rstrip(".")  # never an exponent: 1e-05 is no mode
    mode = f"{base}+{family}{text}"
    split_mode(mode)  # raises on a family that does not apply
    return mode


def is_mode(mode: object) -> bool:
    """Whether ``mode`` names a prompt mode (a base mode, perturbed or not)."""
    try:
        split_mode(mode)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def mode_problems(name: str, modes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(field, what it must be) for the first unknown mode of ``modes``, for ``problems()``."""
    for mode in modes:
        if not is_mode(mode):
            return [(name, f"names an unknown prompt mode {mode!r}: use {MODES_TEXT}")]
    repeated = sorted({mode for mode in modes if modes.count(mode) > 1})
    if repeated:  # evaluation would score the mode twice, its records duplicated
        return [(name, f"lists {', '.join(repeated)} more than once; list each mode once")]
    return []
