"""Perturbed prompt modes (spt.config.modes, spt.harness.prompts): the grammar, level 0 = the
clean prompt bit for bit, keyed determinism, and each family's geometry against an independent
formulation (HQ-SAM's box noise as its authors wrote it, in cx cy w h)."""

from __future__ import annotations

import numpy as np
import pytest

from spt.config.modes import is_mode, perturbed_mode, split_mode
from spt.errors import SuiteError
from spt.harness.prompts import (
    build_prompt,
    click_pixels,
    displace_clicks,
    jitter_boxes,
    prompt_rng,
    ring_offsets,
    validate_mode,
)

SIZE, LOW_RES = 128, 32


def _mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[40:60, 50:90] = 255
    mask[90:100, 10:30] = 255
    return mask


def _central_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[40:60, 50:90] = 255  # far enough from the frame that no jitter below is clipped
    return mask


def _prompt(mode: str, image_id: str = "img", seed: int = 0, mask: np.ndarray | None = None):
    return build_prompt(mode, _mask() if mask is None else mask, seed, image_id, LOW_RES)


@pytest.mark.parametrize(
    "mode",
    ["box+shift0.1", "box+scale2", "box+hqsam1", "coarse-box+shift0.25", "points-3+click32",
     "points-pn+click8", "coarse+tol0.2", "coarse-box+tol0.3"],
)  # fmt: skip
def test_perturbed_modes_parse(mode):
    assert is_mode(mode)
    validate_mode(mode)


@pytest.mark.parametrize(
    "mode",
    ["box+click3", "points-1+shift0.1", "coarse+scale0.1", "box+tol0.1", "coarse+tol0",
     "coarse+tol2", "box+shift", "box+shift-1", "box+shift1e-05", "box~shift0.1", "boxx+shift1",
     "points-0+click1", "box+shift0.1+scale0.1"],
)  # fmt: skip
def test_bad_perturbed_modes_are_refused(mode):
    assert not is_mode(mode)
    with pytest.raises(SuiteError, match="unknown prompt mode"):
        validate_mode(mode)


def test_perturbed_mode_names_never_use_an_exponent():
    assert perturbed_mode("box", "shift", 1e-5) == "box+shift0.00001"
    assert perturbed_mode("box", "shift", 0.0) == "box+shift0"
    assert perturbed_mode("points-1", "click", 32.0) == "points-1+click32"
    assert split_mode(perturbed_mode("coarse", "tol", 0.05)) == ("coarse", "tol", 0.05)
    with pytest.raises(ValueError):
        perturbed_mode("box", "click", 8)


@pytest.mark.parametrize(
    ("clean", "level_zero"),
    [("box", "box+shift0"), ("box", "box+scale0"), ("box", "box+hqsam0"),
     ("coarse-box", "coarse-box+shift0"), ("points-3", "points-3+click0"),
     ("points-pn", "points-pn+click0"), ("coarse", "coarse+tol0.05"),
     ("coarse-box", "coarse-box+tol0.05")],
)  # fmt: skip
def test_level_zero_is_the_clean_prompt_bit_for_bit(clean, level_zero):
    a, b = _prompt(clean), _prompt(level_zero)
    assert b.mode == level_zero
    for name in ("boxes", "point_coords", "point_labels", "mask_input"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_a_click_level_below_one_pixel_at_this_size_is_the_clean_prompt():
    # 3 px at 1024 is 0.375 px of a 128-px input: rounds to 0, nothing moves
    assert (
        click_pixels(3, SIZE) == 0 and click_pixels(32, SIZE) == 4 and click_pixels(64, 1024) == 64
    )
    assert np.array_equal(_prompt("points-3+click3").point_coords, _prompt("points-3").point_coords)


@pytest.mark.parametrize("mode", ["box+shift0.2", "box+hqsam1", "points-3+click32"])
def test_perturbations_are_keyed_by_seed_image_and_level(mode):
    def values(prompt):
        return prompt.boxes if prompt.boxes is not None else prompt.point_coords

    first = values(_prompt(mode))
    assert np.array_equal(first, values(_prompt(mode)))  # same key, same prompt
    assert not np.array_equal(first, values(_prompt(mode, image_id="other")))
    assert not np.array_equal(first, values(_prompt(mode, seed=1)))
    base, family, level = split_mode(mode)
    stronger = perturbed_mode(base, family, level * 2)
    assert not np.array_equal(first, values(_prompt(stronger)))


def test_box_shift_and_scale_stay_within_their_bounds():
    central = _central_mask()
    clean = _prompt("box", mask=central).boxes.astype(np.float64)
    side = clean[:, 2:] - clean[:, :2] + 1
    centre = (clean[:, :2] + clean[:, 2:]) / 2
    for image in range(40):
        shifted = _prompt("box+shift0.2", image_id=f"i{image}", mask=central).boxes.astype(
            np.float64
        )
        moved = (shifted[:, :2] + shifted[:, 2:]) / 2 - centre
        assert np.all(np.abs(moved) <= 0.2 * side + 1e-4)
        assert np.allclose(shifted[:, 2:] - shifted[:, :2] + 1, side, atol=1e-4)  # size kept
        scaled = _prompt("box+scale0.3", image_id=f"i{image}", mask=central).boxes.astype(
            np.float64
        )
        assert np.allclose((scaled[:, :2] + scaled[:, 2:]) / 2, centre, atol=1e-4)  # centre kept
        ratio = (scaled[:, 2:] - scaled[:, :2] + 1) / side
        assert np.all((ratio >= 0.7 - 1e-6) & (ratio <= 1.3 + 1e-6))


def test_hqsam_noise_matches_its_cxcywh_formulation():
    """HQ-SAM (after DN-DETR) adds (2u - 1) * (w/2, h/2, w, h) * scale to (cx, cy, w, h),
    u ~ U(0,1) per coordinate, then clamps. Same draws, written that way."""
    boxes = np.array([[50, 40, 89, 59], [10, 90, 29, 99]], np.float32)
    scale = 0.8
    got = jitter_boxes(boxes, "hqsam", scale, np.random.default_rng(7), SIZE)
    u = np.random.default_rng(7).uniform(-1.0, 1.0, size=(2, 4))
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    cxcywh = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, w, h], 1)
    diff = np.stack([w / 2, h / 2, w, h], 1)
    noisy = cxcywh + u * diff * scale
    half = (np.maximum(noisy[:, 2:], 1) - 1) / 2
    expected = np.concatenate([noisy[:, :2] - half, noisy[:, :2] + half], 1).clip(0, SIZE - 1)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_boxes_never_leave_the_frame_or_invert():
    boxes = np.array([[0, 0, 3, 3], [120, 120, 127, 127]], np.float32)
    for seed in range(50):
        got = jitter_boxes(boxes, "hqsam", 3.0, np.random.default_rng(seed), SIZE)
        assert got.min() >= 0 and got.max() <= SIZE - 1
        assert np.all(got[:, 2] >= got[:, 0]) and np.all(got[:, 3] >= got[:, 1])


@pytest.mark.parametrize("distance", [1, 4, 9, 30])
def test_ring_offsets_are_every_pixel_at_that_distance(distance):
    ring = ring_offsets(distance)
    lengths = np.rint(np.hypot(ring[:, 0], ring[:, 1]))
    assert np.all(lengths == distance)
    brute = {
        (dx, dy)
        for dx in range(-distance - 2, distance + 3)
        for dy in range(-distance - 2, distance + 3)
        if round((dx * dx + dy * dy) ** 0.5) == distance
    }
    assert {tuple(map(int, o)) for o in ring} == brute


def test_clicks_move_by_exactly_the_distance_and_some_leave_the_defect():
    clean = _prompt("points-5").point_coords
    outside = 0
    for image in range(30):
        coords = build_prompt("points-5", _mask(), 0, f"i{image}", LOW_RES).point_coords
        moved = build_prompt("points-5+click64", _mask(), 0, f"i{image}", LOW_RES).point_coords
        step = np.rint(np.hypot(*(moved - coords).reshape(-1, 2).T))
        inside_frame = (moved.reshape(-1, 2) > 0).all(1) & (moved.reshape(-1, 2) < SIZE - 1).all(1)
        assert np.all(step[inside_frame] == click_pixels(64, SIZE))
        xs, ys = moved.reshape(-1, 2).astype(int).T
        outside += int(np.count_nonzero(_mask()[ys, xs] <= 128))
    assert outside > 0, "at 8 px on a 20-px-high defect some clicks must land outside it"
    assert clean.shape == moved.shape
    # labels are kept: a displaced positive click stays a positive click
    assert np.array_equal(
        _prompt("points-pn+click32").point_labels, _prompt("points-pn").point_labels
    )


def test_displacing_clicks_keeps_them_in_the_frame():
    coords = np.array([[[0, 0], [127, 127], [64, 0]]], np.float32)
    moved = displace_clicks(coords, 10, prompt_rng(0, "x", "m"), SIZE)
    assert moved.min() >= 0 and moved.max() <= SIZE - 1 and moved.dtype == np.float32


def test_a_looser_coarse_tolerance_gives_a_coarser_mask():
    def error(mode: str) -> float:
        fg = _mask() > 128
        coverage = (_prompt(mode).mask_input[:, 0] > 0).any(0)
        low = fg.reshape(LOW_RES, SIZE // LOW_RES, LOW_RES, SIZE // LOW_RES).any(axis=(1, 3))
        return float(np.count_nonzero(coverage != low))

    assert error("coarse+tol0.05") <= error("coarse+tol0.3")
    assert not np.array_equal(_prompt("coarse").mask_input, _prompt("coarse+tol0.3").mask_input)
