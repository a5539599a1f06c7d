"""Image corruptions for robustness evaluation: a pure function of (image, name, severity, key).

A corruption is applied at evaluation only, to the original RGB image (uint8 (H,W,3)) before it
is resized for the model. Each has severities 1..5 of increasing strength (ImageNet-C style);
severity 0 is the clean image, returned unchanged. Spatial sizes scale with the shorter side
``s = min(H, W)`` so that a severity means the same at 256 px and at 1600 px; sizes are rounded
half up. Strengths by severity 1..5:

=================  ==========================================================================
``gaussian_noise``  add ``sigma * z``, ``z`` standard normal per pixel and channel;
                    sigma = (0.04, 0.08, 0.12, 0.18, 0.26) x 255 = 10.2, 20.4, 30.6, 45.9, 66.3
``defocus_blur``    mean over the disk ``dx^2 + dy^2 <= r^2``;
                    r = max(1, (0.005, 0.01, 0.015, 0.02, 0.03) x s) px
                    (1, 3, 4, 5, 8 at s = 256; 8, 16, 24, 32, 48 at s = 1600)
``motion_blur``     mean along a line of L pixels centred on the pixel, angle uniform in
                    [0, 180) degrees from the keyed generator;
                    L = max(3, (0.01, 0.02, 0.03, 0.045, 0.06) x s) px
                    (3, 5, 8, 12, 15 at s = 256; 16, 32, 48, 72, 96 at s = 1600)
``jpeg``            JPEG re-encode (OpenCV, libjpeg-turbo); quality 60, 40, 25, 15, 8
``brightness``      add (0.1, 0.2, 0.3, 0.4, 0.5) x 255 = 26, 51, 77, 102, 128 to every channel
``contrast``        ``(x - m) * c + m`` with ``m`` the mean over all pixels and channels;
                    c = 0.6, 0.45, 0.3, 0.2, 0.1
=================  ==========================================================================

Every result is rounded (``rint``, or half up for the blurs) and clipped to 0..255. The blurs
pad with the edge pixel. The motion-blur line is rasterised along its dominant axis (Bresenham
style): offsets ``k = -(L // 2) .. L - 1 - L // 2`` on that axis, the other coordinate
``k * slope`` rounded half up, so it has exactly L distinct pixels at every angle (the angle is
measured from the +x axis towards +y, rows pointing down).

Results are bit-identical on every x86 CPU: the blurs are integer sums divided with round half
up, the other float work is IEEE-exact elementwise float64 arithmetic, and JPEG uses
libjpeg-turbo's integer DCT. Randomness (the noise, the motion angle) comes only from
``stable_rng(seed, image_id, "corruption", name, severity)``, never from a global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from spt.data.stable_random import stable_rng
from spt.errors import SuiteError

CORRUPTIONS = ("gaussian_noise", "defocus_blur", "motion_blur", "jpeg", "brightness", "contrast")
MAX_SEVERITY = 5

# Per severity 1..5 (index severity - 1); see the table in the module docstring.
NOISE_SIGMA = (0.04, 0.08, 0.12, 0.18, 0.26)  # x 255
DEFOCUS_RADIUS = (0.005, 0.01, 0.015, 0.02, 0.03)  # x shorter side, px
MOTION_LENGTH = (0.01, 0.02, 0.03, 0.045, 0.06)  # x shorter side, px
JPEG_QUALITY = (60, 40, 25, 15, 8)
BRIGHTNESS_SHIFT = (26, 51, 77, 102, 128)  # (0.1 .. 0.5) x 255, rounded half up
CONTRAST_FACTOR = (0.6, 0.45, 0.3, 0.2, 0.1)
MIN_DEFOCUS_RADIUS = 1
MIN_MOTION_LENGTH = 3

_CHOICES_TEXT = ", ".join(CORRUPTIONS)


# --- names, severities and labels ---


def check_corruption(name: str, severity: int, where: str) -> None:
    """Raise a one-line SuiteError naming ``where`` unless ``name`` is a corruption and
    ``severity`` an integer 0..MAX_SEVERITY (a bool is not a severity)."""
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise SuiteError(f"{where}: unknown corruption {name!r}: use {_CHOICES_TEXT}")
    is_int = isinstance(severity, int | np.integer) and not isinstance(severity, bool)
    if not is_int or not 0 <= severity <= MAX_SEVERITY:
        raise SuiteError(
            f"{where}: bad severity {severity!r} for {name}: "
            f"severity must be an integer 0..{MAX_SEVERITY}"
        )


def corruption_label(name: str, severity: int) -> str:
    """``"<name>-<severity>"``, e.g. ``"gaussian_noise-3"``; :func:`parse_corruption` inverts it."""
    check_corruption(name, severity, "corruption label")
    return f"{name}-{int(severity)}"


def parse_corruption(label: str) -> tuple[str, int]:
    """``(name, severity)`` from a :func:`corruption_label`; a one-line SuiteError otherwise."""
    where = f"corruption label {label!r}"
    if not isinstance(label, str) or "-" not in label:
        raise SuiteError(f"{where}: expected <name>-<severity>, e.g. gaussian_noise-3")
    name, _, digits = label.rpartition("-")
    if not (digits.isascii() and digits.isdigit()):
        raise SuiteError(f"{where}: severity must be an integer 0..{MAX_SEVERITY}")
    severity = int(digits)
    check_corruption(name, severity, where)
    if corruption_label(name, severity) != label:  # "jpeg-03": one spelling per corruption
        raise SuiteError(f"{where}: write it as {corruption_label(name, severity)!r}")
    return name, severity


# --- the entry point ---


def corrupt(image: np.ndarray, name: str, severity: int, *, seed: int, image_id: str) -> np.ndarray:
    """Corrupt an RGB uint8 (H,W,3) image; returns a new uint8 (H,W,3) array (severity 0: the
    input itself). A pure function of (image bytes, name, severity, seed, image_id)."""
    check_corruption(name, severity, "corruption")
    _check_image(image, "corruption")
    if severity == 0:
        return image
    severity = int(severity)
    rng = stable_rng(seed, image_id, "corruption", name, severity)
    return _APPLY[name](image, severity, rng)


def _check_image(image: np.ndarray, where: str) -> None:
    ok = (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] > 0
        and image.shape[1] > 0
    )
    if not ok:
        got = (
            f"{image.dtype} {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise SuiteError(f"{where}: image must be a non-empty uint8 (H,W,3) RGB array, got {got}")


def _round_half_up(value: float) -> int:
    # Python's round() rounds ties to even; sizes and shifts round half up, as documented.
    return math.floor(value + 0.5)


# --- sizes ---


def defocus_radius(severity: int, *, side: int) -> int:
    """Disk radius (px) of ``defocus_blur`` at ``severity`` 1..5 for shorter side ``side``."""
    return max(MIN_DEFOCUS_RADIUS, _round_half_up(DEFOCUS_RADIUS[severity - 1] * side))


def motion_length(severity: int, *, side: int) -> int:
    """Line length (px) of ``motion_blur`` at ``severity`` 1..5 for shorter side ``side``."""
    return max(MIN_MOTION_LENGTH, _round_half_up(MOTION_LENGTH[severity - 1] * side))


# --- integer blur kernels ---


def disk_offsets(radius: int) -> np.ndarray:
    """(N,2) int64 (dy, dx) of the pixels with ``dx^2 + dy^2 <= radius^2``, row-major."""
    d = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    inside = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[inside], dx[inside]], axis=1).astype(np.int64)


def line_offsets(length: int, angle_deg: float) -> np.ndarray:
    """(length,2) int64 distinct (dy, dx) of a line through (0, 0) at ``angle_deg`` from +x
    towards +y: one pixel per step of the dominant axis, the other coordinate rounded half up."""
    steps = np.arange(length, dtype=np.int64) - length // 2
    # math.cos/sin (scalar libm) rather than numpy's, whose SIMD variants differ by CPU.
    radians = angle_deg * math.pi / 180.0
    cos, sin = math.cos(radians), math.sin(radians)
    if abs(cos) >= abs(sin):
        minor = np.floor(steps * (sin / cos) + 0.5).astype(np.int64)
        return np.stack([minor, steps], axis=1)
    minor = np.floor(steps * (cos / sin) + 0.5).astype(np.int64)
    return np.stack([steps, minor], axis=1)


def _divide_half_up(total: np.ndarray, count: int) -> np.ndarray:
    """uint8 ``total / count`` rounded half up; ``total`` is a non-negative int64 sum."""
    return ((total + count // 2) // count).astype(np.uint8)


def offset_mean(image: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """uint8 (H,W,C) mean of ``image[clamp(y + dy), clamp(x + dx)]`` over distinct (N,2) int
    ``offsets``, rounded half up: an int64 sum of shifted copies of the edge-padded image."""
    height, width = image.shape[:2]
    pad_y, pad_x = (int(v) for v in np.abs(offsets).max(axis=0))
    padded = np.pad(image, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="edge")
    total = np.zeros(image.shape, np.int64)
    for dy, dx in offsets.tolist():
        total += padded[pad_y + dy : pad_y + dy + height, pad_x + dx : pad_x + dx + width]
    return _divide_half_up(total, len(offsets))


def disk_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """uint8 (H,W,C) mean over :func:`disk_offsets` ``(radius)`` with edge padding, rounded half
    up; equal to :func:`offset_mean` on those offsets, in O(radius) passes instead of
    O(radius^2): each disk row is a horizontal run, summed from an int64 prefix sum."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    prefix = np.zeros((padded.shape[0], padded.shape[1] + 1, padded.shape[2]), np.int64)
    np.cumsum(padded, axis=1, dtype=np.int64, out=prefix[:, 1:])
    total = np.zeros(image.shape, np.int64)
    count = 0
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)  # the run is dx in -half..half
        rows = prefix[radius + dy : radius + dy + height]
        total += rows[:, radius + half + 1 : radius + half + 1 + width]
        total -= rows[:, radius - half : radius - half + width]
        count += 2 * half + 1
    return _divide_half_up(total, count)


# --- the corruptions: (image uint8 (H,W,3), severity 1..5, keyed generator) -> uint8 (H,W,3) ---


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _gaussian_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = NOISE_SIGMA[severity - 1] * 255.0
    noise = rng.standard_normal(image.shape)  # drawn row-major over (H,W,3)
    return _to_uint8(image.astype(np.float64) + sigma * noise)


def _defocus_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return disk_mean(image, defocus_radius(severity, side=min(image.shape[:2])))


def _motion_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    angle = float(rng.uniform(0.0, 180.0))
    length = motion_length(severity, side=min(image.shape[:2]))
    return offset_mean(image, line_offsets(length, angle))


def _jpeg(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY[severity - 1]]
    ok, encoded = cv2.imencode(".jpg", bgr, params)
    if not ok:  # OpenCV reports failure only by the flag
        raise SuiteError(f"corruption: JPEG encoding failed for an image of shape {image.shape}")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(decoded[:, :, ::-1])


def _brightness(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    shifted = image.astype(np.int16) + BRIGHTNESS_SHIFT[severity - 1]
    return np.clip(shifted, 0, 255).astype(np.uint8)


def _contrast(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # An exact integer sum and one division: a float reduction's order could vary by build.
    mean = int(image.sum(dtype=np.int64)) / image.size
    factor = CONTRAST_FACTOR[severity - 1]
    return _to_uint8((image.astype(np.float64) - mean) * factor + mean)


_APPLY: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "defocus_blur": _defocus_blur,
    "motion_blur": _motion_blur,
    "jpeg": _jpeg,
    "brightness": _brightness,
    "contrast": _contrast,
}
