"""WeSAM's two views of a training image (CVPR 2024): a weak view (random flips) that the
teacher and the anchor see, and a strong view (photometric ops on the weak image) for the
student. WeSAM's own augmentations, kept beside the baseline; the shared ones (flips, large-scale
jitter) are in :mod:`spt.training.augment`, whose conventions hold here too (uint8 RGB images,
masks of any dtype, every choice from the generator passed in, inputs never modified).

- :func:`weak_view`, :func:`strong_view`, or both at once with :func:`weak_and_strong_views`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from spt.training.augment import Flips, apply_flips, check_image, check_image_mask, to_uint8

# WeSAM builds its strong view from albumentations ops constructed without arguments; these are
# the albumentations 1.x defaults of those ops.
POSTERIZE_BITS = 4
SHARPEN_ALPHA_RANGE = (0.2, 0.5)
SHARPEN_LIGHTNESS_RANGE = (0.5, 1.0)
SOLARIZE_THRESHOLD = 128
BRIGHTNESS_LIMIT = 0.2
CONTRAST_LIMIT = 0.2
SHADOW_COUNT_RANGE = (1, 2)  # inclusive
SHADOW_VERTICES = 5
SHADOW_DARKNESS = 0.5  # multiplier inside the shadow
STRONG_OP_PROBABILITY = 0.5


def weak_view(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, Flips]:
    """WeSAM's weak view: independent horizontal and vertical flips, each with probability 1/2.

    WeSAM composes albumentations' Flip (one of h, v, h+v), HorizontalFlip and VerticalFlip, each
    with p = 0.5. Since HorizontalFlip and VerticalFlip alone already make the final (h, v) state
    uniform over the four combinations, and composing with an independent flip keeps it uniform,
    the composition is exactly two independent fair flips, which is what is drawn here.
    Returns (image, mask, flips); use :func:`apply_flips` to undo them on a prediction.
    """
    check_image_mask(image, mask)
    flips = Flips(horizontal=bool(rng.random() < 0.5), vertical=bool(rng.random() < 0.5))
    return apply_flips(image, flips), apply_flips(mask, flips), flips


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
    """Keep the ``bits`` most significant bits of every channel value (1 <= bits <= 8)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in [1, 8], got {bits}")
    keep = np.uint8((0xFF << (8 - bits)) & 0xFF)
    return image & keep


def equalize(image: np.ndarray) -> np.ndarray:
    """Histogram-equalise each channel separately (OpenCV's ``equalizeHist``)."""
    channels = [cv2.equalizeHist(np.ascontiguousarray(image[..., c])) for c in range(3)]
    return np.stack(channels, axis=-1)


def sharpen(image: np.ndarray, alpha: float, lightness: float) -> np.ndarray:
    """Unsharp-style sharpening: ``I + alpha * ((lightness - 1) * I + detail)``.

    detail = 8 * I - (sum of the 8 neighbours), a Laplacian high-pass; ``alpha`` in [0, 1] blends
    towards the sharpened image, ``lightness`` < 1 also darkens slightly. Borders reflect
    (OpenCV's default, BORDER_REFLECT_101). Rounded and clipped to [0, 255].
    """
    kernel = np.full((3, 3), -alpha, dtype=np.float32)
    kernel[1, 1] = 1.0 + alpha * (lightness - 1.0 + 8.0)
    filtered = cv2.filter2D(image.astype(np.float32), -1, kernel)
    return to_uint8(filtered)


def solarize(image: np.ndarray, threshold: int = SOLARIZE_THRESHOLD) -> np.ndarray:
    """Invert every value at or above ``threshold``: v -> 255 - v."""
    return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def adjust_brightness_contrast(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """``v * (1 + contrast) + brightness * 255``, rounded and clipped.

    The brightness shift is relative to the maximum value 255 (albumentations' by-max rule).
    """
    return to_uint8(image.astype(np.float32) * (1.0 + contrast) + brightness * 255.0)


def cast_shadow(
    image: np.ndarray, polygons: Sequence[np.ndarray], darkness: float = SHADOW_DARKNESS
) -> np.ndarray:
    """Darken the pixels inside the given polygons by the factor ``darkness``.

    polygons: each (K, 2) int (x, y) vertices, filled with OpenCV's even-odd scan fill.
    albumentations halves the HLS lightness instead; scaling RGB by 0.5 halves the lightness too
    and keeps the hue, which is what a shadow needs.
    """
    region = np.zeros(image.shape[:2], dtype=np.uint8)
    cv2.fillPoly(region, [np.asarray(p, dtype=np.int32) for p in polygons], 1)
    shadowed = image.copy()
    inside = region.astype(bool)
    shadowed[inside] = to_uint8(image[inside].astype(np.float32) * darkness)
    return shadowed


def random_shadow_polygons(height: int, width: int, rng: np.random.Generator) -> list[np.ndarray]:
    """1-2 random polygons of 5 vertices each, drawn uniformly in the lower half of the image.

    The lower half is albumentations' default shadow region (x in [0, 1], y in [0.5, 1]).
    Returns a list of (5, 2) int32 (x, y) arrays.
    """
    count = int(rng.integers(SHADOW_COUNT_RANGE[0], SHADOW_COUNT_RANGE[1] + 1))
    polygons = []
    for _ in range(count):
        xs = rng.integers(0, width, size=SHADOW_VERTICES)
        ys = rng.integers(height // 2, height, size=SHADOW_VERTICES)
        polygons.append(np.stack([xs, ys], axis=1).astype(np.int32))
    return polygons


@dataclass(frozen=True)
class AppliedOp:
    """One photometric op a strong view applied, with the parameters it drew."""

    name: str
    params: Mapping[str, object] = field(default_factory=dict)


def strong_view(
    image: np.ndarray, rng: np.random.Generator, p: float = STRONG_OP_PROBABILITY
) -> tuple[np.ndarray, tuple[AppliedOp, ...]]:
    """WeSAM's strong view of a weak-flipped image: photometric ops, each with probability ``p``.

    image: (H, W, 3) uint8, the output of :func:`weak_view`, so the student sees the same flips
    as teacher and anchor and the weak view's mask stays valid (photometric ops never move
    pixels). Ops in WeSAM's order: posterize, equalize, sharpen, solarize, brightness/contrast,
    shadow. Returns the (H, W, 3) uint8 image and the ops applied, in order, with their drawn
    parameters (enough to replay them with the functions of this module).
    """
    check_image(image)
    applied: list[AppliedOp] = []
    out = image.copy()
    height, width = image.shape[:2]

    if rng.random() < p:
        out = posterize(out, POSTERIZE_BITS)
        applied.append(AppliedOp("posterize", {"bits": POSTERIZE_BITS}))
    if rng.random() < p:
        out = equalize(out)
        applied.append(AppliedOp("equalize"))
    if rng.random() < p:
        alpha = float(rng.uniform(*SHARPEN_ALPHA_RANGE))
        lightness = float(rng.uniform(*SHARPEN_LIGHTNESS_RANGE))
        out = sharpen(out, alpha, lightness)
        applied.append(AppliedOp("sharpen", {"alpha": alpha, "lightness": lightness}))
    if rng.random() < p:
        out = solarize(out, SOLARIZE_THRESHOLD)
        applied.append(AppliedOp("solarize", {"threshold": SOLARIZE_THRESHOLD}))
    if rng.random() < p:
        brightness = float(rng.uniform(-BRIGHTNESS_LIMIT, BRIGHTNESS_LIMIT))
        contrast = float(rng.uniform(-CONTRAST_LIMIT, CONTRAST_LIMIT))
        out = adjust_brightness_contrast(out, brightness, contrast)
        applied.append(
            AppliedOp("brightness_contrast", {"brightness": brightness, "contrast": contrast})
        )
    if rng.random() < p:
        polygons = random_shadow_polygons(height, width, rng)
        out = cast_shadow(out, polygons)
        applied.append(AppliedOp("shadow", {"polygons": polygons, "darkness": SHADOW_DARKNESS}))
    return out, tuple(applied)


@dataclass(frozen=True)
class WeSAMViews:
    """The two WeSAM views of one image and what was done to make them.

    ``mask`` is the flipped ground truth, valid for both views (prompts come from it).
    """

    weak_image: np.ndarray  # (H, W, 3) uint8: teacher and anchor input
    strong_image: np.ndarray  # (H, W, 3) uint8: student input
    mask: np.ndarray  # (H, W)
    flips: Flips
    strong_ops: tuple[AppliedOp, ...]


def weak_and_strong_views(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> WeSAMViews:
    """Weak view (flips), then the strong view as photometric ops on the weak image."""
    weak_image, weak_mask, flips = weak_view(image, mask, rng)
    strong_image, strong_ops = strong_view(weak_image, rng)
    return WeSAMViews(weak_image, strong_image, weak_mask, flips, strong_ops)
