"""The robustness analysis's plan: which prompt modes and image corruptions a method is scored
under, from ``analyses.robustness`` (docs/analyses.md).

Prompt curves share one evaluation on clean images (the encoder runs once per image; every
level is a prompt mode, :mod:`spt.config.modes`); each corruption severity is an evaluation of
its own on corrupted images (:mod:`spt.harness.corruptions`) with clean prompts. Every level is
a pure function of (seed, image id, level), so all methods meet the same prompts and images.
"""

from __future__ import annotations

from dataclasses import dataclass

from spt.config.modes import perturbed_mode
from spt.harness.corruptions import corruption_label
from spt.harness.prompts import COARSE_EPS_RATIO

#: curve name -> what its level measures (the report's axis labels)
PROMPT_CURVES = {
    "box_shift": "box centre shift (fraction of the side)",
    "box_scale": "box side scale jitter (fraction)",
    "box_hqsam": "HQ-SAM box-noise scale",
    "point_count": "positive clicks",
    "click_px": "click displacement (px at 1024)",
    "coarse_tolerance": "coarse polygon tolerance (x perimeter)",
}
PROMPTS_FOLDER = "prompts"
IMAGES_FOLDER = "images"
CLEAN = "clean"  # the images folder of severity 0: the corruption modes on clean images
#: In each method's prompts folder: per image and displaced-click mode, the positive clicks and
#: those outside the defect (:mod:`spt.harness.placement`).
PLACEMENT_FILE = "click_placement.csv"
PLACEMENT_COLUMNS = ["dataset", "image_id", "prompt_mode", "clicks", "outside"]


@dataclass(frozen=True)
class CurvePoint:
    """One level of one curve: the prompt mode it is scored as."""

    curve: str
    level: float
    mode: str


def level_mode(base: str, family: str, level: float, clean_level: float = 0.0) -> str:
    """The prompt mode of one level: the base mode itself at the clean level (it is the same
    prompt bit for bit, so it is scored and tested once), else the perturbed mode."""
    return base if level == clean_level else perturbed_mode(base, family, level)


def prompt_points(section) -> list[CurvePoint]:
    """Every (curve, level, prompt mode) of ``analyses.robustness``, in params order. The
    clean level of every curve is the base mode, so curves that share it share its records."""
    points = [CurvePoint("box_shift", f, level_mode("box", "shift", f)) for f in section.box_shift]
    points += [CurvePoint("box_scale", f, level_mode("box", "scale", f)) for f in section.box_scale]
    points += [CurvePoint("box_hqsam", f, level_mode("box", "hqsam", f)) for f in section.box_hqsam]
    points += [CurvePoint("point_count", float(k), f"points-{k}") for k in section.point_counts]
    clicks = f"points-{section.click_points}"
    points += [CurvePoint("click_px", d, level_mode(clicks, "click", d)) for d in section.click_px]
    points += [
        CurvePoint("coarse_tolerance", e, level_mode("coarse", "tol", e, COARSE_EPS_RATIO))
        for e in section.coarse_tolerance
    ]
    return points


def prompt_modes(section) -> tuple[str, ...]:
    """The distinct prompt modes of :func:`prompt_points`, first occurrence first."""
    return tuple(dict.fromkeys(point.mode for point in prompt_points(section)))


def corruption_labels(section) -> tuple[str, ...]:
    """``<name>-<severity>`` of every corruption x severity, in params order."""
    return tuple(
        corruption_label(name, severity)
        for name in section.corruptions
        for severity in section.severities
    )
