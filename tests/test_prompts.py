"""Prompt modes: official box/point parity, determinism, and the unavailable cases."""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
import pytest
import torch

from spt.errors import SuiteError
from spt.harness.preprocess import InputFrame, mask_to_input
from spt.harness.prompts import (
    DEFAULT_PROMPT_MODES,
    Prompt,
    PromptUnavailable,
    build_prompt,
    build_prompt_or_box,
    coarse_polygons,
    fill_polygons,
    sample_pixels,
    tight_box,
    validate_mode,
)

L = 32  # tiny's mask-prompt side


@pytest.fixture(scope="module")
def official(fixture_path):
    """The official parity fixture, tests/fixtures/official_spt_tiny.pt."""
    return torch.load(fixture_path, weights_only=True)


def synthetic_mask(index: int, size: int = 128) -> np.ndarray:
    """A float (S,S) 0..255 mask with one or two blobs; a function of index only."""
    rng = np.random.default_rng(index)
    mask = np.zeros((size, size), np.float32)
    for _ in range(1 + index % 2):
        center = tuple(int(v) for v in rng.integers(20, size - 20, 2))
        axes = tuple(int(v) for v in rng.integers(4, 18, 2))
        cv2.ellipse(mask, center, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
    return mask


# --- parity with the official code ---


def test_box_matches_official_masks_to_boxes(official):
    for entry in official["boxes"]:
        for mask, expected, what in zip(
            entry["masks"], entry["boxes"], entry["order"], strict=True
        ):
            mask = mask.numpy()
            if not (mask > 128).any():
                assert what.startswith("empty")
                with pytest.raises(PromptUnavailable, match="vanishes"):
                    build_prompt("box", mask, 0, "empty", L)
                continue
            assert np.array_equal(tight_box(mask > 128), expected.numpy()), what


def test_resized_gt_and_boxes_match_the_official_pipeline(official):
    """Original gt -> bilinear to 128 reproduces labels_val; its box is case a's input box."""
    labels_val = official["points_fixture"]["labels_val"]
    case_a = official["cases"][0]
    for index, metrics in enumerate(case_a["eval_metrics"]):
        gt = metrics["gt"][0].numpy()
        resized = mask_to_input(gt, InputFrame.for_image(*gt.shape, size=128))
        assert np.array_equal(resized, labels_val[index, 0].numpy())
        prompt = build_prompt("box", resized, 0, f"img{index}", L)
        assert np.array_equal(prompt.boxes, case_a["inputs"][index]["boxes"].numpy())


def test_point_candidates_and_order_match_official_sampler(official):
    """With torch.randperm seeded as the official run was, the same points come out."""
    fixture = official["points_fixture"]
    generator = torch.Generator().manual_seed(int(fixture["seed"]))

    def torch_permutation(n):
        return torch.randperm(n, generator=generator).numpy()

    for index in range(fixture["labels_val"].shape[0]):
        region = fixture["labels_val"][index, 0].numpy() > 128
        points = sample_pixels(region, int(fixture["k"]), torch_permutation)
        assert np.array_equal(points, fixture["points"][index].numpy())


# --- determinism ---


def _prompts_for(ids: list[int]) -> list[tuple[int, str, Prompt]]:
    return [
        (i, mode, build_prompt(mode, synthetic_mask(i), 7, f"ds/img{i}", L))
        for i in ids
        for mode in DEFAULT_PROMPT_MODES
    ]


def _chunk_job(ids: list[int]):
    return _prompts_for(ids)


def _by_key(items):
    return {(i, mode): prompt for i, mode, prompt in items}


def _same_prompts(a, b) -> bool:
    return a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)


def test_prompts_do_not_depend_on_workers_or_order():
    ids = list(range(8))
    serial = _by_key(_prompts_for(ids))
    assert _same_prompts(serial, _by_key(_prompts_for(ids)))  # rerun
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    assert _same_prompts(serial, _by_key(_prompts_for(shuffled)))  # other order
    for workers in (1, 2):
        chunks = [shuffled[w::workers] for w in range(workers)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = [item for part in pool.map(_chunk_job, chunks) for item in part]
        assert _same_prompts(serial, _by_key(results)), f"{workers} worker(s)"


def test_points_depend_on_seed_image_and_mode_and_nothing_global():
    mask = synthetic_mask(2)
    base = build_prompt("points-5", mask, 0, "a", L)
    np.random.seed(123)
    torch.manual_seed(123)
    assert build_prompt("points-5", mask, 0, "a", L).equals(base)
    assert not build_prompt("points-5", mask, 1, "a", L).equals(base)
    assert not build_prompt("points-5", mask, 0, "b", L).equals(base)
    other_mode = build_prompt("points-pn", mask, 0, "a", L).point_coords[0, :5]
    assert not np.array_equal(other_mode, base.point_coords[0])


# --- contents of each mode ---


def test_point_modes_sample_distinct_pixels_on_the_right_side():
    mask = synthetic_mask(3)
    fg = mask > 128
    for k in (1, 3, 5):
        prompt = build_prompt(f"points-{k}", mask, 0, "x", L)
        coords = prompt.point_coords[0].astype(int)
        assert prompt.point_coords.shape == (1, k, 2) and np.all(prompt.point_labels == 1)
        assert fg[coords[:, 1], coords[:, 0]].all()
        assert len({tuple(c) for c in coords}) == k
    pn = build_prompt("points-pn", mask, 0, "x", L)
    coords = pn.point_coords[0].astype(int)
    assert np.array_equal(pn.point_labels[0], [1] * 5 + [0] * 5)
    assert fg[coords[:5, 1], coords[:5, 0]].all() and not fg[coords[5:, 1], coords[5:, 0]].any()


def test_coarse_of_a_rectangle_is_the_rectangle():
    mask = np.zeros((128, 128), np.float32)
    mask[32:64, 16:80] = 255  # aligned to the 4x4 cells of the 32x32 prompt
    coarse = build_prompt("coarse", mask, 0, "r", L, mask_prompt_logit=10.0)
    expected = np.full((32, 32), -10.0, np.float32)
    expected[8:16, 4:20] = 10.0
    assert coarse.mask_input.shape == (1, 1, 32, 32)
    assert np.array_equal(coarse.mask_input[0, 0], expected)
    assert np.array_equal(build_prompt("coarse-box", mask, 0, "r", L).boxes, [[16, 32, 79, 63]])


def test_coarse_polygon_follows_the_outline_with_the_wesam_tolerance():
    mask = synthetic_mask(4) > 128
    polygons = coarse_polygons(mask)
    filled = fill_polygons(polygons, 128)
    overlap = (filled & mask).sum() / (filled | mask).sum()
    assert 0.5 < overlap < 1.0  # a coarse fit: close, not exact
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for contour, polygon in zip(contours, polygons, strict=True):
        eps = max(0.05 * cv2.arcLength(contour, True), 3)
        # every outline pixel lies within eps of the fitted polygon (Douglas-Peucker guarantee)
        distances = [
            abs(cv2.pointPolygonTest(polygon, (float(x), float(y)), True)) for x, y in contour[:, 0]
        ]
        assert max(distances) <= eps + 1e-6
    box = build_prompt("coarse-box", synthetic_mask(4), 0, "e", L).boxes[0]
    vertices = np.concatenate(polygons)[:, 0]
    assert np.array_equal(box, [*vertices.min(axis=0), *vertices.max(axis=0)])


def test_one_prompt_per_image_by_default_and_per_region_as_option():
    mask = np.zeros((128, 128), np.float32)
    mask[10:20, 10:30] = 255
    mask[70:90, 60:65] = 255
    assert np.array_equal(build_prompt("box", mask, 0, "t", L).boxes, [[10, 10, 64, 89]])
    instances = build_prompt("box", mask, 0, "t", L, instances=True)
    assert np.array_equal(instances.boxes, [[10, 10, 29, 19], [60, 70, 64, 89]])
    for mode in DEFAULT_PROMPT_MODES:
        assert build_prompt(mode, mask, 0, "t", L, instances=True).count == 2


def test_unbuildable_prompts_say_why():
    tiny = np.zeros((128, 128), np.float32)
    tiny[5:7, 5:7] = 255  # 4 pixels
    assert build_prompt("points-3", tiny, 0, "s", L).count == 1
    with pytest.raises(PromptUnavailable, match="points-5 needs 5 foreground pixels.*found 4"):
        build_prompt("points-5", tiny, 0, "s", L)
    with pytest.raises(PromptUnavailable, match="vanishes"):
        build_prompt("box", np.full((128, 128), 128.0, np.float32), 0, "s", L)  # 128 is not > 128


def test_training_prompts_fall_back_to_the_box_only_when_the_mode_cannot_be_built():
    tiny = np.zeros((128, 128), np.float32)
    tiny[5:7, 5:7] = 255  # 4 pixels: no points-5
    fallback = build_prompt_or_box("points-5", tiny, 0, "s", L)
    assert fallback.mode == "box" and fallback.equals(build_prompt("box", tiny, 0, "s", L))
    kept = build_prompt_or_box("points-3", tiny, 0, "s", L)
    assert kept.equals(build_prompt("points-3", tiny, 0, "s", L))
    with pytest.raises(PromptUnavailable, match="vanishes"):  # no box either: still an error
        build_prompt_or_box("points-5", np.zeros((128, 128), np.float32), 0, "s", L)


def test_mode_names_are_checked():
    for mode in ("box", "points-1", "points-12", "points-pn", "coarse", "coarse-box"):
        assert validate_mode(mode) == mode
    for bad in ("points-0", "points-", "boxes", "points-x"):
        with pytest.raises(SuiteError, match="unknown prompt mode"):
            validate_mode(bad)
