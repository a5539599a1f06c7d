"""A synthetic "natural objects" source domain: colourful, large-ish objects on cluttered scenes.

SAM was pretrained on photographs whose masks are whole objects: large, coloured, distinct from
their surroundings. The industrial twins (:mod:`spt.data.synthetic`) are the opposite: small,
low-contrast defects on repetitive textures. This module draws the first kind of image so that
a tiny SAM pretrained on it is a meaningful zero-shot baseline that then meets a domain shift.

A scene is a pure function of (seed, scene index): a smooth cluttered background (two-colour
gradient, large soft shapes, mild noise) with several objects painted over it in order, each a
random shape (ellipse, blob, convex or concave polygon, star, ring) with its own fill (flat,
gradient, stripes, speckle) and shading. Masks are *visible* instance masks: an object painted
later hides what it covers, so masks are pairwise disjoint; objects left with fewer than
``MIN_VISIBLE_PIXELS`` visible pixels stay in the image as clutter but get no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from spt.data.stable_random import stable_rng
from spt.errors import SuiteError

SCENE_SIZE = 128  # the tiny backbone's input side
SHAPES = ("ellipse", "blob", "convex", "concave", "star", "ring")
FILLS = ("flat", "gradient", "stripes", "speckle")
OBJECTS_PER_SCENE = (2, 6)  # inclusive range drawn per scene
MIN_VISIBLE_PIXELS = 120  # ~0.7% of a 128x128 image: a visible object, not a sliver
# Object radius as a fraction of the scene side: large-ish, unlike a defect.
RADIUS_RANGE = (0.09, 0.28)


@dataclass(frozen=True)
class NaturalScene:
    """One scene in the model-input frame.

    image: (S,S,3) uint8 RGB. masks: (K,S,S) bool, K >= 1, pairwise disjoint visible masks
    in painting order (back to front). shapes: the K shape names, for inspection.
    """

    image: np.ndarray
    masks: np.ndarray
    shapes: tuple[str, ...]


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` under ``seed``; nothing else feeds a scene."""
    return stable_rng("natural-scene", seed, index)


def _vivid_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated RGB colour, float32 (3,) in [0, 255] (random hue, high saturation)."""
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(140, 255), rng.uniform(110, 255)]]], np.uint8
    )
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation RGB colour, float32 (3,): backgrounds are duller than objects."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 90), rng.uniform(50, 230)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _unit_ramp(size: int, rng: np.random.Generator) -> np.ndarray:
    """(S,S) float32 in [0,1]: a linear ramp along a random direction."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)
    return (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """(S,S,3) float32: a two-colour gradient with large blurred shapes and mild noise."""
    ramp = _unit_ramp(size, rng)[..., None]
    canvas = (1 - ramp) * _muted_colour(rng) + ramp * _muted_colour(rng)
    for _ in range(int(rng.integers(1, 4))):
        # Large soft shapes: clutter with no edges for the model to mistake for an object.
        shape = np.zeros((size, size), np.float32)
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(rng.integers(size // 5, size // 2)), int(rng.integers(size // 5, size // 2)))
        cv2.ellipse(shape, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(shape, (0, 0), size / 10)[..., None] * rng.uniform(0.3, 0.7)
        canvas = (1 - alpha) * canvas + alpha * _muted_colour(rng)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.5)
    return canvas + 6 * noise[..., None]


def _polar_outline(
    centre: np.ndarray, radii: np.ndarray, rotation: float, irregular_angles: bool, rng
) -> np.ndarray:
    """Vertices (V,1,2) int32 at the given radii around ``centre``."""
    count = radii.size
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    if irregular_angles:
        angles = np.sort(angles + rng.uniform(-0.4, 0.4, count) * (2 * np.pi / count))
    angles = angles + rotation
    points = centre + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.rint(points).astype(np.int32)[:, None, :]


def shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """bool (S,S): one object silhouette of ``kind`` (one of :data:`SHAPES`), maybe clipped."""
    canvas = np.zeros((size, size), np.uint8)
    radius = rng.uniform(*RADIUS_RANGE) * size
    centre = rng.uniform(0.1 * size, 0.9 * size, 2)
    rotation = rng.uniform(0, 2 * np.pi)
    if kind == "ellipse":
        axes = (int(radius), int(radius * rng.uniform(0.45, 1.0)))
        cx, cy = (int(v) for v in centre)
        cv2.ellipse(canvas, (cx, cy), axes, float(np.degrees(rotation)), 0, 360, 1, -1)
    elif kind == "blob":
        # Smoothed random polar radii: a few low-frequency harmonics around a circle.
        angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        wobble = np.zeros_like(angles)
        for harmonic in range(2, 6):
            amplitude = rng.uniform(0, 0.22) / harmonic**0.5
            wobble += amplitude * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
        radii = radius * np.clip(1 + wobble, 0.35, None)
        cv2.fillPoly(canvas, [_polar_outline(centre, radii, rotation, False, rng)], 1)
    elif kind == "convex":
        vertices = int(rng.integers(3, 9))
        radii = np.full(vertices, radius)
        hull = cv2.convexHull(_polar_outline(centre, radii, rotation, True, rng))
        cv2.fillPoly(canvas, [hull], 1)
    elif kind == "concave":
        vertices = int(rng.integers(6, 12))
        radii = radius * rng.uniform(0.4, 1.0, vertices)
        cv2.fillPoly(canvas, [_polar_outline(centre, radii, rotation, True, rng)], 1)
    elif kind == "star":
        tips = int(rng.integers(4, 8))
        radii = np.tile([radius, radius * rng.uniform(0.35, 0.6)], tips)
        cv2.fillPoly(canvas, [_polar_outline(centre, radii, rotation, False, rng)], 1)
    elif kind == "ring":
        cx, cy = (int(v) for v in centre)
        thickness = max(3, int(radius * rng.uniform(0.3, 0.55)))
        cv2.circle(canvas, (cx, cy), int(radius - thickness / 2), 1, thickness)
    else:
        raise SuiteError(f"unknown natural shape {kind!r}: use one of {', '.join(SHAPES)}")
    return canvas.astype(bool)


def object_appearance(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(S,S,3) float32: the paint of one object over the whole frame (masked later).

    Every fill is shaded by a soft light ramp, so objects look lit rather than flat stickers.
    """
    base = _vivid_colour(rng)
    if kind == "flat":
        paint = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    elif kind == "gradient":
        ramp = _unit_ramp(size, rng)[..., None]
        paint = (1 - ramp) * base + ramp * _vivid_colour(rng)
    elif kind == "stripes":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(5, 14)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        mix = (wave > 0).astype(np.float32)[..., None]
        paint = (1 - mix) * base + mix * _vivid_colour(rng)
    elif kind == "speckle":
        spots = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 2)
        paint = base + 30 * spots[..., None]
    else:
        raise SuiteError(f"unknown natural fill {kind!r}: use one of {', '.join(FILLS)}")
    light = 0.75 + 0.5 * _unit_ramp(size, rng)[..., None]
    return paint * light


def natural_scene(seed: int, index: int, size: int = SCENE_SIZE) -> NaturalScene:
    """Scene ``index`` under ``seed``: a pure function of both (and of ``size``)."""
    if size < 32:
        raise SuiteError(f"natural scenes need a side of at least 32 px, got {size}")
    rng = scene_rng(seed, index)
    image = background(size, rng)
    painted: list[np.ndarray] = []  # silhouettes in painting order, before occlusion
    kinds: list[str] = []
    for _ in range(int(rng.integers(OBJECTS_PER_SCENE[0], OBJECTS_PER_SCENE[1] + 1))):
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        silhouette = shape_mask(kind, size, rng)
        paint = object_appearance(FILLS[int(rng.integers(len(FILLS)))], size, rng)
        # Soft 1-px anti-aliased edge, as a camera would give; the mask stays the hard shape.
        alpha = cv2.GaussianBlur(silhouette.astype(np.float32), (3, 3), 0.7)[..., None]
        image = (1 - alpha) * image + alpha * paint
        painted.append(silhouette)
        kinds.append(kind)
    # Visible masks: what no later object covers.
    covered = np.zeros((size, size), bool)
    visible: list[np.ndarray] = []
    for silhouette in reversed(painted):
        visible.append(silhouette & ~covered)
        covered |= silhouette
    visible.reverse()
    keep = [i for i, mask in enumerate(visible) if int(mask.sum()) >= MIN_VISIBLE_PIXELS]
    if not keep:
        # Every object fell off the frame or was hidden: the largest visible one still counts.
        keep = [int(np.argmax([mask.sum() for mask in visible]))]
    masks = np.stack([visible[i] for i in keep])
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return NaturalScene(pixels, masks, tuple(kinds[i] for i in keep))
