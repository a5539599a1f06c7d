"""Per-image mask metrics at parity with the official SPT evaluation, and their aggregation.

Thresholds are the official ones: a predicted pixel is foreground when its logit is > 0 (a logit
of exactly 0 is background), a ground-truth pixel when its value is > 128.

- IoU = |P & G| / |P | G|.
- Boundary IoU: the boundary of a mask is the mask minus its erosion by a (2d+1) x (2d+1)
  square (d iterations of a 3x3 erosion), with everything outside the image counted as
  background, so a mask touching the border has a boundary there. d = max(1, round(0.02 x
  diagonal)) with Python's round (half to even: 75x100 gives 2). The score is the IoU of the two
  boundary maps.
- Dice = 2 |P & G| / (|P| + |G|) (not in the official code; same thresholds).

Every score is rounded to float32, as the official code reports it (IoU divides in float32,
boundary IoU in float64 then casts), so the values match the official ones bit for bit.
0/0 (prediction and ground truth both empty) gives NaN, as officially; the harness never meets it
because it evaluates only images whose mask is non-empty, so a non-empty union is guaranteed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BOUNDARY_DILATION_RATIO = 0.02
METRIC_NAMES = ("iou", "biou", "dice")


def _as_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor; torch is not imported here (fast CLI help)
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    # Accept the official (1,H,W) layout as well as (H,W).
    return array[0] if array.ndim == 3 and array.shape[0] == 1 else array


def prediction_mask(logits) -> np.ndarray:
    """Logits (H,W) or (1,H,W) -> bool (H,W): logit > 0."""
    return _as_numpy(logits) > 0


def ground_truth_mask(gt) -> np.ndarray:
    """Mask values (H,W) or (1,H,W), 0..255 -> bool (H,W): value > 128."""
    return _as_numpy(gt) > 128


def boundary_dilation(height: int, width: int, ratio: float = BOUNDARY_DILATION_RATIO) -> int:
    """Boundary width d in pixels: max(1, round(ratio x diagonal)), round half to even."""
    return max(1, int(round(ratio * math.sqrt(height**2 + width**2))))


def mask_boundary(mask: np.ndarray, dilation: int) -> np.ndarray:
    """bool (H,W) -> bool (H,W): pixels of ``mask`` within ``dilation`` of the background.

    One erosion by a (2d+1)-square equals d erosions by a 3x3 square; a constant-0 border makes
    the outside of the image background, as the official 1-pixel zero padding does.
    """
    mask_u8 = mask.astype(np.uint8)
    kernel = np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8)
    eroded = cv2.erode(mask_u8, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & ~eroded.astype(bool)


def _overlap_ratio(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    return int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b))


def _float32_ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator divided in float32, as torch divides integer tensors."""
    if denominator == 0:
        return float("nan")
    return float(np.float32(numerator) / np.float32(denominator))


def _float64_then_float32(numerator: int, denominator: int) -> float:
    """numerator / denominator in float64, then cast to float32, as the boundary IoU code does."""
    if denominator == 0:
        return float("nan")
    return float(np.float32(numerator / denominator))


def iou(logits, gt) -> float:
    """IoU of (logits > 0) and (gt > 128); both (H,W) or (1,H,W) at the same size."""
    return _float32_ratio(*_overlap_ratio(prediction_mask(logits), ground_truth_mask(gt)))


def boundary_iou(logits, gt, ratio: float = BOUNDARY_DILATION_RATIO) -> float:
    """Boundary IoU of (logits > 0) and (gt > 128) with the official dilation."""
    return MaskScorer(ground_truth_mask(gt), ratio).boundary_iou(prediction_mask(logits))


def dice(logits, gt) -> float:
    """Dice of (logits > 0) and (gt > 128)."""
    return MaskScorer(ground_truth_mask(gt)).dice(prediction_mask(logits))


@dataclass
class MaskScorer:
    """Scores predictions against one ground truth, computing its boundary once.

    ``gt``: bool (H,W), already thresholded. Predictions passed to the methods: bool (H,W).
    """

    gt: np.ndarray
    ratio: float = BOUNDARY_DILATION_RATIO

    def __post_init__(self) -> None:
        self.dilation = boundary_dilation(*self.gt.shape, self.ratio)
        self.gt_boundary = mask_boundary(self.gt, self.dilation)
        self.gt_pixels = int(np.count_nonzero(self.gt))

    def iou(self, pred: np.ndarray) -> float:
        return _float32_ratio(*_overlap_ratio(pred, self.gt))

    def boundary_iou(self, pred: np.ndarray) -> float:
        pred_boundary = mask_boundary(pred, self.dilation)
        return _float64_then_float32(*_overlap_ratio(pred_boundary, self.gt_boundary))

    def dice(self, pred: np.ndarray) -> float:
        both = int(np.count_nonzero(pred & self.gt))
        return _float64_then_float32(2 * both, int(np.count_nonzero(pred)) + self.gt_pixels)

    def score(self, pred: np.ndarray) -> dict[str, float]:
        """All metrics of one prediction: {'iou', 'biou', 'dice'}."""
        return {"iou": self.iou(pred), "biou": self.boundary_iou(pred), "dice": self.dice(pred)}
