"""Training augmentations applied jointly to an image and its mask, driven by an explicit RNG.

Representation: ``image`` is an (H, W, 3) RGB numpy array, ``mask`` an (H, W) numpy array
(bool or integer; its dtype is kept). The geometric ops (flips, large-scale jitter) take uint8
or float32 pixels in 0..255 and keep the dtype: training jitters the float pixels the harness's
input path resized, unrounded. Photometric ops (WeSAM's views) take uint8 only, as they are
defined on 8-bit levels. Geometric ops move image and mask together; photometric ops touch the
image only. Resizing goes through torch's bilinear kernel, pinned in portable numerics (OpenCV's
float kernels dispatch by CPU).

Every random choice comes from the ``numpy.random.Generator`` passed in, never a global RNG, so
a generator keyed on (seed, image id, epoch), e.g. ``spt.data.stable_random.stable_rng(...)``,
makes an augmentation a pure function of them. Outputs are new contiguous arrays; inputs are
never modified.

- SPT recipe (HQ-SAM heritage): :func:`random_hflip`, :func:`large_scale_jitter`.
- WeSAM's own views build on :func:`apply_flips`; they live beside the baseline
  (``baselines/wesam_views.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import torch

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

# HQ-SAM's large-scale jitter range, relative to the output size.
LSJ_SCALE_RANGE = (0.1, 2.0)


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
    check_image_mask(image, mask, float_ok=True)
    flipped = bool(rng.random() < p)
    flips = Flips(horizontal=flipped, vertical=False)
    return apply_flips(image, flips), apply_flips(mask, flips), flipped


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

    image (H, W, 3) uint8 or float32, mask (H, W) -> image (S, S, 3) of the same dtype, mask
    (S, S), S = ``output_size``.
    1. Draw s uniformly in ``scale_range``; resize so the longer side is ``s * S`` (aspect kept,
       sides rounded, at least 1 px): image bilinear (torch, half-pixel centres, no antialias;
       uint8 rounded back), mask nearest (values stay in the input set).
    2. Where the resized side exceeds S, keep a window at a uniformly drawn integer offset.
    3. Where it falls short, pad at the bottom / right with 0 in image and mask (SAM also pads
       bottom / right, so padding never shifts the content).
    The mask uses centre-aligned nearest (``INTER_NEAREST_EXACT``), the same pixel-centre
    convention as bilinear for the image, so both stay aligned; plain ``INTER_NEAREST`` is off by
    up to half a source pixel.
    """
    check_image_mask(image, mask, float_ok=True)
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    height, width = mask.shape
    scale = float(rng.uniform(low, high))
    factor = scale * output_size / max(height, width)
    resized_h = max(1, round(height * factor))
    resized_w = max(1, round(width * factor))

    resized_image = _resize_bilinear(image, resized_h, resized_w)
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


def _resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) pixels -> (height, width, 3) of the same dtype, as the harness resizes."""
    planes = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    resized = torch.nn.functional.interpolate(
        planes[None], size=(height, width), mode="bilinear", align_corners=False
    )[0].permute(1, 2, 0)
    values = np.ascontiguousarray(resized.numpy())
    return to_uint8(values) if image.dtype == np.uint8 else values


def _resize_mask_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    # OpenCV cannot resize bool arrays; go through uint8 and back.
    source = mask.astype(np.uint8) if mask.dtype == bool else mask
    resized = cv2.resize(source, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return resized.astype(mask.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Photometric ops (image only, uint8 in, uint8 out)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def check_image(image: np.ndarray, float_ok: bool = False) -> None:
    dtypes = (np.uint8, np.float32) if float_ok else (np.uint8,)
    if not isinstance(image, np.ndarray) or image.dtype not in dtypes or image.ndim != 3:
        kinds = "uint8 or float32" if float_ok else "uint8"
        raise ValueError(f"image must be an (H, W, 3) {kinds} numpy array")
    if image.shape[2] != 3:
        raise ValueError(f"image must have 3 channels, got shape {image.shape}")


def check_image_mask(image: np.ndarray, mask: np.ndarray, float_ok: bool = False) -> None:
    check_image(image, float_ok)
    if not isinstance(mask, np.ndarray) or mask.shape != image.shape[:2]:
        raise ValueError(
            f"mask must be an (H, W) numpy array matching the image {image.shape[:2]}, "
            f"got {getattr(mask, 'shape', type(mask))}"
        )
