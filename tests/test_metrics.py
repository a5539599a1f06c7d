"""Metric parity with the official SPT code (the parity fixture) and an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import f1_score, jaccard_score

from spt.harness.metrics import (
    MaskScorer,
    boundary_dilation,
    boundary_iou,
    dice,
    ground_truth_mask,
    iou,
    mask_boundary,
    prediction_mask,
)
from spt.harness.preprocess import InputFrame, logits_to_original


@pytest.fixture(scope="module")
def official(fixture_path):
    """The official parity fixture, tests/fixtures/official_spt_tiny.pt."""
    return torch.load(fixture_path, weights_only=True)


def _same(value: float, expected: float) -> bool:
    return (math.isnan(value) and math.isnan(expected)) or value == expected


def test_fixture_has_the_documented_cases(official):
    assert len(official["metrics"]) == 26


def test_every_official_metric_case_is_reproduced_exactly(official):
    mismatches = []
    for case in official["metrics"]:
        got = (iou(case["pred"], case["gt"]), boundary_iou(case["pred"], case["gt"]))
        if not (_same(got[0], case["iou"]) and _same(got[1], case["biou"])):
            mismatches.append((case["name"], got, (case["iou"], case["biou"])))
    assert mismatches == []


def test_official_dilation_and_boundary_maps(official):
    for case in official["metrics"]:
        height, width = case["size"]
        d = boundary_dilation(height, width)
        assert d == case["dilation"], case["name"]
        gt_boundary = mask_boundary(ground_truth_mask(case["gt"]), d)
        pred_boundary = mask_boundary(prediction_mask(case["pred"]), d)
        assert np.array_equal(gt_boundary, case["gt_boundary"][0].numpy().astype(bool)), case[
            "name"
        ]
        assert np.array_equal(pred_boundary, case["pred_boundary"][0].numpy().astype(bool)), case[
            "name"
        ]


def test_both_empty_is_nan_as_official(official):
    case = next(c for c in official["metrics"] if c["name"] == "both_empty_64x80")
    assert math.isnan(iou(case["pred"], case["gt"]))
    assert math.isnan(boundary_iou(case["pred"], case["gt"]))
    assert math.isnan(dice(case["pred"], case["gt"]))


def test_low_res_logits_resized_to_original_give_the_official_eval_metrics(official):
    """compute_iou / compute_boundary_iou: 32x32 logits -> original gt size -> metrics."""
    checked = 0
    for case in official["cases"]:
        for output, expected in zip(case["outputs"], case.get("eval_metrics") or [], strict=False):
            gt = expected["gt"][0].numpy()
            frame = InputFrame.for_image(*gt.shape, size=128)
            for stage, key in (("draft", "low_res_logits_draft"), ("final", "low_res_logits")):
                logits = logits_to_original(output[key], frame)[0, 0]
                assert iou(logits, gt) == expected[f"iou_{stage}"], (case["name"], stage)
                assert boundary_iou(logits, gt) == expected[f"biou_{stage}"], (case["name"], stage)
                checked += 1
    assert checked == 12


# --- independent reference: scipy erosion + sklearn scores, straight from the definitions ---


def reference_boundary(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    d = max(1, round(0.02 * math.hypot(h, w)))
    eroded = ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=d, border_value=0)
    return mask & ~eroded


def random_case(rng: np.random.Generator):
    h, w = int(rng.integers(1, 90)), int(rng.integers(1, 90))
    smooth = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma=rng.uniform(0.5, 4))
    logits = (smooth - np.quantile(smooth, rng.uniform(0.2, 0.9))).astype(np.float32)
    gt_smooth = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma=rng.uniform(0.5, 4))
    gt = np.where(gt_smooth > np.quantile(gt_smooth, rng.uniform(0.3, 0.95)), 255, 0)
    return logits, gt.astype(np.uint8)


def test_metrics_match_an_independent_reference_on_random_masks():
    rng = np.random.default_rng(20250101)
    for _ in range(150):
        logits, gt = random_case(rng)
        pred_bool, gt_bool = logits > 0, gt > 128
        if not (pred_bool | gt_bool).any():
            continue
        ref_iou = jaccard_score(gt_bool.ravel(), pred_bool.ravel(), zero_division=0)
        ref_dice = f1_score(gt_bool.ravel(), pred_bool.ravel(), zero_division=0)
        pb, gb = reference_boundary(pred_bool), reference_boundary(gt_bool)
        ref_biou = (pb & gb).sum() / (pb | gb).sum()
        assert iou(logits, gt) == pytest.approx(ref_iou, rel=1e-6)
        assert dice(logits, gt) == pytest.approx(ref_dice, rel=1e-6)
        assert boundary_iou(logits, gt) == pytest.approx(ref_biou, rel=1e-6)
        assert np.array_equal(mask_boundary(gt_bool, boundary_dilation(*gt.shape)), gb)


def test_scorer_matches_the_functions_and_thresholds_are_strict():
    logits = np.array([[0.0, 1e-6, -1.0], [2.0, 0.0, 3.0]], np.float32)
    gt = np.array([[128, 129, 0], [255, 128, 0]], np.uint8)
    # predicted {(0,1),(1,0),(1,2)}; gt {(0,1),(1,0)}: IoU 2/3, Dice 4/5
    assert iou(logits, gt) == pytest.approx(2 / 3)
    assert dice(logits, gt) == pytest.approx(4 / 5)
    scorer = MaskScorer(gt > 128)
    assert scorer.score(logits > 0) == {
        "iou": iou(logits, gt),
        "biou": boundary_iou(logits, gt),
        "dice": dice(logits, gt),
    }


def test_round_half_to_even_dilation():
    assert boundary_dilation(75, 100) == 2  # 0.02 * 125 = 2.5
    assert boundary_dilation(125, 300) == 6  # 0.02 * 325 = 6.5
    assert boundary_dilation(10, 12) == 1  # 0.3 -> clamped to 1
