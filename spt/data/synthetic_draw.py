"""Procedural surfaces and defects for the synthetic twins.

Textures (noise, stripes, brushed grain, weave) stand in for the products' surfaces; defects
(scratch, crack, blob, stain, missing piece) are drawn into the image and, as the same shape,
into a boolean mask. Every function takes its generator explicitly.
"""

from __future__ import annotations

import cv2
import numpy as np

TEXTURES = ("noise", "stripes", "grain", "weave")
DEFECTS = ("scratch", "crack", "blob", "stain", "missing")


def texture(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A grey surface, float32 in [0, 255]."""
    base = rng.uniform(70, 170)
    noise = rng.normal(0, 1, (height, width)).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "noise":
        surface = cv2.GaussianBlur(noise, (0, 0), rng.uniform(1.0, 3.0)) * 25
    elif kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 16)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
        surface = 18 * np.sin(phase) + 6 * noise
    elif kind == "grain":
        length = int(rng.integers(7, 15)) | 1  # odd kernel length
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length  # horizontal motion blur: brushed metal
        surface = cv2.filter2D(noise, -1, kernel) * 40
    elif kind == "weave":
        period = rng.uniform(5, 10)
        surface = 15 * np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)
        surface += 5 * noise
    else:
        raise ValueError(f"unknown texture {kind!r}; use one of {TEXTURES}")
    return np.clip(base + surface, 0, 255).astype(np.float32)


def colourise(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An RGB version of a grey surface with a random tint, float32 HxWx3."""
    tint = rng.uniform(0.7, 1.2, size=3).astype(np.float32)
    return np.clip(grey[..., None] * tint, 0, 255)


def _random_point(height: int, width: int, rng: np.random.Generator, margin: int = 4):
    return int(rng.integers(margin, width - margin)), int(rng.integers(margin, height - margin))


def defect_mask(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of one defect shape (never empty)."""
    canvas = np.zeros((height, width), np.uint8)
    short = min(height, width)
    if kind == "scratch":
        points = np.array([_random_point(height, width, rng) for _ in range(3)], np.int32)
        cv2.polylines(canvas, [points], False, 255, thickness=int(rng.integers(1, 3)))
    elif kind == "crack":
        x, y = _random_point(height, width, rng, margin=short // 4)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(short // 3, short))):
            angle += rng.normal(0, 0.35)  # a random walk that keeps a heading
            nx = int(np.clip(x + 2 * np.cos(angle), 0, width - 1))
            ny = int(np.clip(y + 2 * np.sin(angle), 0, height - 1))
            cv2.line(canvas, (x, y), (nx, ny), 255, 1)
            x, y = nx, ny
    elif kind == "blob":
        centre = _random_point(height, width, rng, margin=short // 5)
        axes = (int(rng.integers(3, short // 6 + 4)), int(rng.integers(3, short // 6 + 4)))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    elif kind == "stain":
        field = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 4)
        cx, cy = _random_point(height, width, rng, margin=short // 4)
        yy, xx = np.mgrid[0:height, 0:width]
        radius = rng.uniform(short / 8, short / 4)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        canvas[inside & (field > np.quantile(field[inside], 0.35))] = 255
        canvas[cy, cx] = 255  # never empty, however the noise falls
    elif kind == "missing":
        # A chunk broken off one edge of the part.
        side = int(rng.integers(4))
        depth = int(rng.integers(short // 8 + 2, short // 4 + 3))
        start = int(rng.integers(0, max(1, (width if side < 2 else height) - 2 * depth)))
        span = start + int(rng.integers(depth, 2 * depth + 1))
        if side == 0:
            polygon = [(start, 0), (span, 0), ((start + span) // 2, depth)]
        elif side == 1:
            polygon = [
                (start, height - 1),
                (span, height - 1),
                ((start + span) // 2, height - 1 - depth),
            ]
        elif side == 2:
            polygon = [(0, start), (0, span), (depth, (start + span) // 2)]
        else:
            polygon = [
                (width - 1, start),
                (width - 1, span),
                (width - 1 - depth, (start + span) // 2),
            ]
        cv2.fillPoly(canvas, [np.array(polygon, np.int32)], 255)
    else:
        raise ValueError(f"unknown defect {kind!r}; use one of {DEFECTS}")
    return canvas > 0


def apply_defect(
    image: np.ndarray, mask: np.ndarray, kind: str, rng: np.random.Generator
) -> np.ndarray:
    """Paint ``mask`` into ``image`` (float, grey or RGB) the way ``kind`` looks."""
    out = image.copy()
    region = mask if out.ndim == 2 else mask[..., None].repeat(out.shape[2], axis=2)
    if kind == "missing":
        out[region] = 5.0  # background seen through the hole
    elif kind == "stain":
        out[region] = out[region] * rng.uniform(0.55, 0.75)
    elif kind in ("scratch", "blob"):
        out[region] = rng.choice([25.0, 230.0]) + rng.normal(0, 5, size=int(region.sum()))
    else:  # crack: dark
        out[region] = rng.uniform(10, 40)
    return np.clip(out, 0, 255)
