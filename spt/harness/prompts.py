"""Prompt modes: each prompt is a pure function of (seed, image id, mode, resized ground truth).

All prompts live in the S x S model-input frame and are built from the ground-truth mask resized
there (float 0..255, foreground > 128, see :mod:`spt.harness.preprocess`), as the official code
does. Modes:

- ``box``: the tight inclusive xyxy box around all foreground pixels (official masks_to_boxes:
  x_max is the last foreground column index).
- ``points-K``: K distinct foreground pixels, all positive, drawn uniformly without replacement
  (official masks_sample_points); coordinates are pixel indices (x, y).
- ``points-pn``: 5 positive foreground + 5 negative background pixels (WeSAM), positives first.
- ``coarse``: per outer contour, a polygon fitted with approxPolyDP (eps = max(0.05 x perimeter,
  3 px)), all polygons filled in the S x S frame and given to SAM as its mask prompt (L x L
  logits, see :func:`mask_prompt_logits`).
- ``coarse-box``: WeSAM's official variant: the bounding box of those polygons.

Perturbed modes (``<mode>+<family><level>``, grammar in :mod:`spt.config.modes`) build the clean
prompt of the base mode first, with the base mode's own key, then perturb it with a generator
keyed by the full mode string: the perturbation is a pure function of (seed, image id, family,
level), the same for every method, and level 0 is the clean prompt itself.

Randomness comes only from a numpy Generator seeded with sha256(f"{seed}|{image_id}|{mode}"), so a
prompt does not depend on worker count, dataset order or any global RNG. By default an image gets
one prompt set covering all its defect regions (official protocol); with ``instances=True`` every
8-connected component gets its own row (N > 1). A prompt that cannot be built raises
:class:`PromptUnavailable` with the reason; the harness records it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from spt.config.modes import MODES_TEXT, is_mode, split_mode
from spt.data.stable_random import stable_rng
from spt.errors import SuiteError

if TYPE_CHECKING:  # torch is imported where tensors are made, so the CLI's --help stays fast
    import torch

DEFAULT_PROMPT_MODES = (
    "box",
    "points-1",
    "points-3",
    "points-5",
    "points-pn",
    "coarse",
    "coarse-box",
)
FOREGROUND_THRESHOLD = 128
PN_POINTS = 5
COARSE_EPS_RATIO = 0.05
COARSE_EPS_MIN_PX = 3.0
#: ``+click<d>`` levels are pixels of a 1024-px input, the published backbones' side.
CLICK_REFERENCE_SIDE = 1024
DEFAULT_MASK_PROMPT_LOGIT = 10.0


class PromptUnavailable(Exception):
    """A prompt mode cannot be built for this image; ``reason`` says why (one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Prompt:
    """One image's prompt set in the S x S model-input frame; N rows (instances), each decoded.

    boxes:        (N,4) float32 xyxy, or None
    point_coords: (N,K,2) float32 x,y pixel indices, or None
    point_labels: (N,K) float32, 1 positive / 0 negative, or None
    mask_input:   (N,1,L,L) float32 logits-like mask prompt, or None
    """

    mode: str
    boxes: np.ndarray | None = None
    point_coords: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    mask_input: np.ndarray | None = None

    @property
    def count(self) -> int:
        """N, the number of prompt rows."""
        for part in (self.boxes, self.point_coords, self.mask_input):
            if part is not None:
                return int(part.shape[0])
        return 0

    def as_tensors(self, device: torch.device | str = "cpu") -> dict[str, object]:
        """Keyword arguments for segment_anything's ``PromptEncoder.forward``."""
        import torch

        def tensor(array):
            return None if array is None else torch.from_numpy(array).to(device)

        points = None
        if self.point_coords is not None:
            points = (tensor(self.point_coords), tensor(self.point_labels))
        return {"points": points, "boxes": tensor(self.boxes), "masks": tensor(self.mask_input)}

    def equals(self, other: Prompt) -> bool:
        """Exact equality of mode and every array (dataclass == cannot compare arrays)."""
        if self.mode != other.mode:
            return False
        for name in ("boxes", "point_coords", "point_labels", "mask_input"):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                return False
        return True


def validate_mode(mode: str) -> str:
    """Return ``mode`` if it names a prompt mode, else raise a SuiteError listing them (the
    grammar is :mod:`spt.config.modes`', which the params schema checks too)."""
    if is_mode(mode):
        return mode
    raise SuiteError(f"unknown prompt mode {mode!r}: use {MODES_TEXT}")


def prompt_rng(seed: int, image_id: str, mode: str) -> np.random.Generator:
    """The generator for one (seed, image id, mode): independent of order, workers and globals."""
    return stable_rng(seed, image_id, mode)


def foreground(resized_mask: np.ndarray) -> np.ndarray:
    """Resized mask (S,S) in 0..255 -> bool (S,S) foreground, the official > 128."""
    return resized_mask > FOREGROUND_THRESHOLD


def tight_box(region: np.ndarray) -> np.ndarray:
    """bool (S,S) non-empty -> float32 (4,) inclusive xyxy of its pixels."""
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def sample_pixels(
    region: np.ndarray, k: int, permutation: Callable[[int], np.ndarray]
) -> np.ndarray:
    """K distinct pixels of ``region`` as float32 (K,2) x,y.

    Candidates are taken in row-major order and the first K of ``permutation(n)`` are kept, the
    official sampler's scheme (it uses torch.randperm; the harness passes a numpy permutation).
    """
    ys, xs = np.nonzero(region)
    chosen = np.asarray(permutation(xs.size))[:k]
    return np.stack([xs[chosen], ys[chosen]], axis=1).astype(np.float32)


def coarse_polygons(region: np.ndarray, eps_ratio: float = COARSE_EPS_RATIO) -> list[np.ndarray]:
    """bool (S,S) -> one int32 (V,1,2) polygon per outer contour (WeSAM's approxPolyDP fit,
    tolerance ``eps_ratio`` x perimeter, at least 3 px)."""
    contours, _ = cv2.findContours(
        region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    polygons = []
    for contour in contours:
        eps = max(eps_ratio * cv2.arcLength(contour, True), COARSE_EPS_MIN_PX)
        polygons.append(cv2.approxPolyDP(contour, eps, True))
    return polygons


def fill_polygons(polygons: list[np.ndarray], size: int) -> np.ndarray:
    """Rasterise polygons into a bool (S,S) map (degenerate ones become lines or points)."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, polygons, 1)
    # fillPoly leaves 1- and 2-vertex polygons empty; draw their outline so they still count.
    cv2.polylines(canvas, polygons, True, 1)
    return canvas.astype(bool)


def mask_prompt_logits(region: np.ndarray, low_res: int, logit: float) -> np.ndarray:
    """bool (S,S) -> float32 (1,L,L) mask prompt for SAM.

    SAM's mask prompt is its own previous low-res logits. The filled polygon is area-averaged to
    L x L (coverage p in [0,1]) and mapped linearly to logits logit * (2p - 1): +logit inside,
    -logit outside, graded on the outline.
    """
    coverage = cv2.resize(
        region.astype(np.float32), (low_res, low_res), interpolation=cv2.INTER_AREA
    )
    return (logit * (2.0 * coverage - 1.0)).astype(np.float32)[None]


def _regions(fg: np.ndarray, instances: bool) -> list[np.ndarray]:
    if not instances:
        return [fg]
    count, labels = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    return [labels == index for index in range(1, count)]


def build_prompt(
    mode: str,
    resized_mask: np.ndarray,
    seed: int,
    image_id: str,
    low_res: int,
    instances: bool = False,
    mask_prompt_logit: float = DEFAULT_MASK_PROMPT_LOGIT,
) -> Prompt:
    """The prompt of ``mode`` (perturbed or not) for one image.

    resized_mask: float (S,S) 0..255, the ground truth in the model-input frame.
    low_res: L, the side of SAM's mask prompt (4 x the embedding grid).
    Raises PromptUnavailable (with the reason) when the prompt cannot be built.
    """
    validate_mode(mode)
    base, family, level = split_mode(mode)
    eps_ratio = level if family == "tol" else COARSE_EPS_RATIO
    prompt = _clean_prompt(
        base, resized_mask, seed, image_id, low_res, instances, mask_prompt_logit, eps_ratio
    )
    if family is None or family == "tol" or level == 0:
        return replace(prompt, mode=mode)
    rng = prompt_rng(seed, image_id, mode)
    size = resized_mask.shape[0]
    if family == "click":
        coords = displace_clicks(prompt.point_coords, click_pixels(level, size), rng, size)
        return replace(prompt, mode=mode, point_coords=coords)
    return replace(prompt, mode=mode, boxes=jitter_boxes(prompt.boxes, family, level, rng, size))


def click_pixels(level: float, size: int) -> int:
    """A ``+click<d>`` level (px of a 1024-px input) in whole pixels of an S-px input."""
    return int(round(level * size / CLICK_REFERENCE_SIDE))


def ring_offsets(distance: int) -> np.ndarray:
    """int (R,2) every integer (dx, dy) whose length rounds to ``distance`` (> 0), in a fixed
    order: the directions a click can move in, without trigonometry (bit-exact anywhere)."""
    span = np.arange(-distance - 1, distance + 2)
    dx, dy = np.meshgrid(span, span, indexing="xy")
    on_ring = np.rint(np.sqrt(dx * dx + dy * dy)) == distance
    return np.stack([dx[on_ring], dy[on_ring]], axis=1)


def displace_clicks(
    coords: np.ndarray, distance: int, rng: np.random.Generator, size: int
) -> np.ndarray:
    """float32 (N,K,2) clicks, each moved ``distance`` px in a uniformly drawn direction and
    kept inside the S x S frame; a moved click may leave the defect (its label is kept)."""
    if distance <= 0:
        return coords
    ring = ring_offsets(distance)
    picks = rng.integers(0, len(ring), size=coords.shape[:2])
    moved = coords + ring[picks].astype(np.float32)
    return np.clip(moved, 0, size - 1).astype(np.float32)


def jitter_boxes(
    boxes: np.ndarray, family: str, level: float, rng: np.random.Generator, size: int
) -> np.ndarray:
    """float32 (N,4) inclusive xyxy boxes under box noise, clipped to the S x S frame.

    shift: centre + U(-1,1) x level x side, per axis; scale: side x (1 + U(-1,1) x level);
    hqsam: HQ-SAM's (DN-DETR's) box noise, centre + U(-1,1) x side/2 x level and side +
    U(-1,1) x side x level, four draws per box. A side never shrinks below one pixel.
    """
    x0, y0, x1, y1 = boxes.astype(np.float64).T
    width, height = x1 - x0 + 1, y1 - y0 + 1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if family == "shift":
        u = rng.uniform(-1.0, 1.0, size=(len(boxes), 2))
        cx, cy = cx + u[:, 0] * level * width, cy + u[:, 1] * level * height
    elif family == "scale":
        u = rng.uniform(-1.0, 1.0, size=(len(boxes), 2))
        width, height = width * (1 + u[:, 0] * level), height * (1 + u[:, 1] * level)
    elif family == "hqsam":
        u = rng.uniform(-1.0, 1.0, size=(len(boxes), 4))
        cx, cy = cx + u[:, 0] * width / 2 * level, cy + u[:, 1] * height / 2 * level
        width, height = width + u[:, 2] * width * level, height + u[:, 3] * height * level
    else:
        raise ValueError(f"no box perturbation {family!r}")
    half_w, half_h = (np.maximum(width, 1) - 1) / 2, (np.maximum(height, 1) - 1) / 2
    jittered = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    return np.clip(jittered, 0, size - 1).astype(np.float32)


def _clean_prompt(
    mode: str,
    resized_mask: np.ndarray,
    seed: int,
    image_id: str,
    low_res: int,
    instances: bool,
    mask_prompt_logit: float,
    eps_ratio: float,
) -> Prompt:
    """The protocol's prompt of a base ``mode``; ``eps_ratio`` is the coarse polygon tolerance."""
    size = resized_mask.shape[0]
    fg = foreground(resized_mask)
    if not fg.any():
        raise PromptUnavailable(f"defect vanishes when the mask is resized to {size}x{size}")
    regions = _regions(fg, instances)
    rng = prompt_rng(seed, image_id, mode)

    if mode == "box":
        return Prompt(mode, boxes=np.stack([tight_box(r) for r in regions]))

    if mode.startswith("points-"):
        positives, negatives = (PN_POINTS, PN_POINTS) if mode == "points-pn" else (int(mode[7:]), 0)
        coords, labels = [], []
        for index, region in enumerate(regions):
            background = ~region
            for needed, pool, what in (
                (positives, region, "foreground"),
                (negatives, background, "background"),
            ):
                available = int(np.count_nonzero(pool))
                if available < needed:
                    where = f" in region {index + 1}" if instances else ""
                    raise PromptUnavailable(
                        f"{mode} needs {needed} {what} pixels{where} at {size}x{size}, "
                        f"found {available}"
                    )
            points = [sample_pixels(region, positives, rng.permutation)]
            if negatives:
                points.append(sample_pixels(background, negatives, rng.permutation))
            coords.append(np.concatenate(points))
            labels.append(np.r_[np.ones(positives), np.zeros(negatives)].astype(np.float32))
        return Prompt(mode, point_coords=np.stack(coords), point_labels=np.stack(labels))

    # coarse and coarse-box share the polygon fit.
    filled = [fill_polygons(coarse_polygons(region, eps_ratio), size) for region in regions]
    if mode == "coarse-box":
        return Prompt(mode, boxes=np.stack([tight_box(f) for f in filled]))
    masks = np.stack([mask_prompt_logits(f, low_res, mask_prompt_logit) for f in filled])
    return Prompt(mode, mask_input=masks)


def build_prompt_or_box(
    mode: str, resized_mask: np.ndarray, seed: int, image_id: str, low_res: int
) -> Prompt:
    """:func:`build_prompt`, or the box prompt when ``mode`` cannot be built on this mask.

    For training samples, which must always have a prompt: only a tiny object lacks the pixels
    some modes need, and its box always exists (a mask with no foreground at all still raises
    PromptUnavailable). Evaluation never falls back: it records the reason instead.
    """
    try:
        return build_prompt(mode, resized_mask, seed, image_id, low_res)
    except PromptUnavailable:
        return build_prompt("box", resized_mask, seed, image_id, low_res)
