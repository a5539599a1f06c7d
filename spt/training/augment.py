"""Training augmentations applied jointly to an image and its mask, driven by an explicit RNG.

Representation: ``image`` is an (H, W, 3) uint8 RGB numpy array, ``mask`` an (H, W) numpy array
(bool or integer; its dtype is kept). uint8 because the photometric ops (posterize, equalize,
solarize) are defined on 8-bit levels and images decode to uint8; tensors are made afterwards.
Geometric ops move image and mask together; photometric ops touch the image only.

Every random choice comes from the ``numpy.random.Generator`` passed in, never a global RNG, so
a generator keyed on (seed, image id, epoch), e.g. ``spt.data.stable_random.stable_rng(...)``,
makes an augmentation a pure function of them. Outputs are new contiguous arrays; inputs are
never modified.

- SPT recipe (HQ-SAM heritage): :func:`random_hflip`, :func:`large_scale_jitter`.
- WeSAM: :func:`weak_view` (random flips) and :func:`strong_view` (photometric ops on the weak
  image), or both at once with :func:`weak_and_strong_views`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np
import torch

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

# HQ-SAM's large-scale jitter range, relative to the output size.
LSJ_SCALE_RANGE = (0.1, 2.0)

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


# --------------------------------------------------------------------------------------------
# Flips
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flips:
    """Which flips a view applied. Flips are their own inverse: applying them again undoes them."""

    horizontal: bool
    vertical: bool


def apply_flips(
    array: ArrayOrTensor, flips: Flips, axes: tuple[int, int] = (0, 1)
) -> ArrayOrTensor:
    """Apply (or undo) ``flips`` to a numpy array or a torch tensor.

    ``axes`` = (row axis, column axis): (0, 1) for an (H, W, 3) image or (H, W) mask, (-2, -1)
    for (B, 1, H, W) logits, e.g. to bring a prediction on the weak view back to the original
    frame. Always returns a new array or tensor (C-contiguous for numpy), even with no flips.
    """
    row_axis, column_axis = axes
    flip_axes = [row_axis] if flips.vertical else []
    if flips.horizontal:
        flip_axes.append(column_axis)
    if isinstance(array, torch.Tensor):
        return torch.flip(array, dims=flip_axes) if flip_axes else array.clone()
    flipped = np.flip(array, axis=flip_axes) if flip_axes else array
    return np.array(flipped, order="C", copy=True)


def hflip(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image (H, W, 3) and mask (H, W) left-right."""
    flips = Flips(horizontal=True, vertical=False)
    return apply_flips(image, flips), apply_flips(mask, flips)


def vflip(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image (H, W, 3) and mask (H, W) top-bottom."""
    flips = Flips(horizontal=False, vertical=True)
    return apply_flips(image, flips), apply_flips(mask, flips)


def random_hflip(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, p: float = 0.5
) -> tuple[np.ndarray, np.ndarray, bool]:
    """SPT / HQ-SAM recipe: mirror left-right with probability ``p``.

    Returns (image, mask, flipped).
    """
    _check_image_mask(image, mask)
    flipped = bool(rng.random() < p)
    flips = Flips(horizontal=flipped, vertical=False)
    return apply_flips(image, flips), apply_flips(mask, flips), flipped


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
    _check_image_mask(image, mask)
    flips = Flips(horizontal=bool(rng.random() < 0.5), vertical=bool(rng.random() < 0.5))
    return apply_flips(image, flips), apply_flips(mask, flips), flips


# --------------------------------------------------------------------------------------------
# Large-scale jitter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JitterRecord:
    """What :func:`large_scale_jitter` did, enough to map coordinates between the two frames.

    A point at (y, x) of the (H, W) input lands at
    (y * resized_h / H - crop_y, x * resized_w / W - crop_x) in the output.
    """

    scale: float  # drawn factor: the longer side became scale * output_size
    resized_hw: tuple[int, int]  # size after resizing, before the crop / pad
    crop_yx: tuple[int, int]  # top-left corner of the kept window in the resized image
    content_hw: tuple[int, int]  # real pixels at the top-left of the output; the rest is padding


def large_scale_jitter(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    output_size: int = 1024,
    scale_range: tuple[float, float] = LSJ_SCALE_RANGE,
) -> tuple[np.ndarray, np.ndarray, JitterRecord]:
    """HQ-SAM's large-scale jitter: random rescale, then a random crop or a pad to a fixed size.

    image (H, W, 3) uint8, mask (H, W) -> image (S, S, 3), mask (S, S), S = ``output_size``.
    1. Draw s uniformly in ``scale_range``; resize so the longer side is ``s * S`` (aspect kept,
       sides rounded, at least 1 px): image bilinear, mask nearest (values stay in the input set).
    2. Where the resized side exceeds S, keep a window at a uniformly drawn integer offset.
    3. Where it falls short, pad at the bottom / right with 0 in image and mask (SAM also pads
       bottom / right, so padding never shifts the content).
    The mask uses centre-aligned nearest (``INTER_NEAREST_EXACT``), the same pixel-centre
    convention as bilinear for the image, so both stay aligned; plain ``INTER_NEAREST`` is off by
    up to half a source pixel.
    """
    _check_image_mask(image, mask)
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    height, width = mask.shape
    scale = float(rng.uniform(low, high))
    factor = scale * output_size / max(height, width)
    resized_h = max(1, round(height * factor))
    resized_w = max(1, round(width * factor))

    resized_image = cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
    resized_mask = _resize_mask_nearest(mask, resized_h, resized_w)

    crop_y = int(rng.integers(0, max(resized_h - output_size, 0) + 1))
    crop_x = int(rng.integers(0, max(resized_w - output_size, 0) + 1))
    content_h = min(resized_h, output_size)
    content_w = min(resized_w, output_size)

    out_image = np.zeros((output_size, output_size, 3), dtype=image.dtype)
    out_mask = np.zeros((output_size, output_size), dtype=mask.dtype)
    window = (slice(crop_y, crop_y + content_h), slice(crop_x, crop_x + content_w))
    out_image[:content_h, :content_w] = resized_image[window]
    out_mask[:content_h, :content_w] = resized_mask[window]
    record = JitterRecord(
        scale=scale,
        resized_hw=(resized_h, resized_w),
        crop_yx=(crop_y, crop_x),
        content_hw=(content_h, content_w),
    )
    return out_image, out_mask, record


def _resize_mask_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    # OpenCV cannot resize bool arrays; go through uint8 and back.
    source = mask.astype(np.uint8) if mask.dtype == bool else mask
    resized = cv2.resize(source, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return resized.astype(mask.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Photometric ops (image only, uint8 in, uint8 out)
# --------------------------------------------------------------------------------------------


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
    return _to_uint8(filtered)


def solarize(image: np.ndarray, threshold: int = SOLARIZE_THRESHOLD) -> np.ndarray:
    """Invert every value at or above ``threshold``: v -> 255 - v."""
    return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def adjust_brightness_contrast(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """``v * (1 + contrast) + brightness * 255``, rounded and clipped.

    The brightness shift is relative to the maximum value 255 (albumentations' by-max rule).
    """
    return _to_uint8(image.astype(np.float32) * (1.0 + contrast) + brightness * 255.0)


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
    shadowed[inside] = _to_uint8(image[inside].astype(np.float32) * darkness)
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
    _check_image(image)
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


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError("image must be an (H, W, 3) uint8 numpy array")
    if image.shape[2] != 3:
        raise ValueError(f"image must have 3 channels, got shape {image.shape}")


def _check_image_mask(image: np.ndarray, mask: np.ndarray) -> None:
    _check_image(image)
    if not isinstance(mask, np.ndarray) or mask.shape != image.shape[:2]:
        raise ValueError(
            f"mask must be an (H, W) numpy array matching the image {image.shape[:2]}, "
            f"got {getattr(mask, 'shape', type(mask))}"
        )
