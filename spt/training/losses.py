"""Segmentation losses for fine-tuning SAM: HQ-SAM's point-sampled loss and the shared terms.

Conventions shared by every function here:

- ``logits`` are raw mask-decoder outputs (before the sigmoid); a pixel is foreground when its
  logit is > 0.
- ``targets`` are float masks in [0, 1] (hard labels or bilinearly resampled ones); bool is cast.
- Losses over a batch are computed per mask and then averaged over masks, so every mask weighs
  the same whatever its resolution.

Who uses what:

- SPT and the LoRA / adapter baselines: :func:`hq_sam_loss` (BCE + Dice on points chosen by
  uncertainty, METHOD.md "Training recipe").
- WeSAM: ``20 * sigmoid_focal_loss + dice_loss`` against the teacher's pseudo-label, plus
  :func:`iou_head_loss`; its own terms (pseudo-labels, anchor and instance-contrastive losses)
  are in ``baselines/wesam_losses.py``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from spt.harness.compute import in_fp32

HQ_SAM_NUM_POINTS = 112 * 112
HQ_SAM_OVERSAMPLE_RATIO = 3.0
HQ_SAM_IMPORTANCE_SAMPLE_RATIO = 0.75

# --------------------------------------------------------------------------------------------
# Point sampling (HQ-SAM / Mask2Former / PointRend)
# --------------------------------------------------------------------------------------------


def point_sample(
    values: torch.Tensor,
    coords: torch.Tensor,
    padding_mode: Literal["zeros", "border"] = "zeros",
) -> torch.Tensor:
    """Read ``values`` bilinearly at continuous points given in normalised image coordinates.

    values: (B, C, H, W). coords: (B, P, 2) as (x, y) in [0, 1], where 0 and 1 are the outer
    edges of the first and last pixels (``align_corners=False``): pixel row i, column j has its
    centre at ((j + 0.5) / W, (i + 0.5) / H). Because the coordinates are resolution-free, the
    same ``coords`` address the same physical spot in a 256x256 logit map and a 1024x1024 target.
    Returns (B, C, P).

    ``padding_mode="zeros"`` (the HQ-SAM / Mask2Former behaviour) blends points within half a
    pixel of the border with 0; ``"border"`` repeats the edge pixel instead.
    """
    if values.dim() != 4 or coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(
            f"expected values (B,C,H,W) and coords (B,P,2), got {values.shape}, {coords.shape}"
        )
    # grid_sample wants (B, H_out, W_out, 2) in [-1, 1]; use a (P, 1) output grid.
    grid = (coords.to(values.dtype) * 2.0 - 1.0).unsqueeze(2)
    sampled = F.grid_sample(
        values, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )
    return sampled.squeeze(3)


@torch.no_grad()
def select_uncertain_points(
    logits: torch.Tensor,
    generator: torch.Generator,
    num_points: int = HQ_SAM_NUM_POINTS,
    oversample_ratio: float = HQ_SAM_OVERSAMPLE_RATIO,
    importance_sample_ratio: float = HQ_SAM_IMPORTANCE_SAMPLE_RATIO,
) -> torch.Tensor:
    """Choose where to evaluate the loss: mostly where the prediction is least certain.

    logits: (B, 1, h, w). Returns coords (B, num_points, 2), (x, y) in [0, 1], no gradient.

    1. Draw ``int(num_points * oversample_ratio)`` candidates uniformly in [0, 1]^2.
    2. Uncertainty of a candidate = -|logit| there (bilinear :func:`point_sample`): a logit near 0
       is a pixel the model cannot decide.
    3. Keep the ``int(importance_sample_ratio * num_points)`` most uncertain candidates, then
       append the remaining points as fresh uniform draws, so confident regions keep some signal.

    The generator must live on ``logits.device``; it is consumed in the order: candidates, then
    the random remainder.
    """
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"expected logits (B,1,h,w), got {tuple(logits.shape)}")
    if oversample_ratio < 1.0 or not 0.0 <= importance_sample_ratio <= 1.0:
        raise ValueError(
            "need oversample_ratio >= 1 and importance_sample_ratio in [0, 1], got "
            f"{oversample_ratio}, {importance_sample_ratio}"
        )
    batch = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain

    candidates = torch.rand(
        batch, num_candidates, 2, generator=generator, device=logits.device, dtype=torch.float32
    )
    uncertainty = -point_sample(logits.float(), candidates).abs().squeeze(1)  # (B, num_candidates)
    most_uncertain = uncertainty.topk(num_uncertain, dim=1).indices  # (B, num_uncertain)
    uncertain_points = torch.gather(candidates, 1, most_uncertain.unsqueeze(-1).expand(-1, -1, 2))
    random_points = torch.rand(
        batch, num_random, 2, generator=generator, device=logits.device, dtype=torch.float32
    )
    return torch.cat([uncertain_points, random_points], dim=1)


# --------------------------------------------------------------------------------------------
# Dense mask losses
# --------------------------------------------------------------------------------------------


@in_fp32
def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss on sigmoid probabilities, averaged over masks.

    logits, targets: (B, ...) with the same shape; everything after dim 0 is one mask.
    Per mask, with p = sigmoid(logits) and t = targets:
    ``1 - (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)``.
    ``smooth = 1`` as HQ-SAM and WeSAM; it keeps an empty target with an empty prediction at ~0.
    Returns a scalar.
    """
    _check_same_shape(logits, targets)
    probs = logits.sigmoid().flatten(1)
    labels = targets.to(probs.dtype).flatten(1)
    overlap = 2.0 * (probs * labels).sum(1) + smooth
    total = probs.sum(1) + labels.sum(1) + smooth
    return (1.0 - overlap / total).mean()


@in_fp32
def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, mean over each mask's elements, then over masks.

    logits, targets: (B, ...) with the same shape. Returns a scalar.
    """
    _check_same_shape(logits, targets)
    per_element = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), reduction="none"
    )
    return per_element.flatten(1).mean(1).mean()


@in_fp32
def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) as defined by ``torchvision.ops.sigmoid_focal_loss``.

    logits, targets: (B, ...) with the same shape. Per element, with p = sigmoid(logit),
    p_t = p if t = 1 else 1 - p (linearly in t for soft targets), alpha_t = alpha * t +
    (1 - alpha) * (1 - t): ``alpha_t * (1 - p_t) ** gamma * BCE(logit, t)``; ``alpha < 0``
    disables the class weighting. Mean over each mask's elements, then over masks.

    Not WeSAM's code: its ``FocalLoss`` applies the focal factor once to the mean BCE of the whole
    image with alpha 0.8, and its training loop passes the number of masks where alpha goes. The
    per-element RetinaNet definition is what the WeSAM paper names; that is what this computes.
    """
    _check_same_shape(logits, targets)
    labels = targets.to(logits.dtype)
    probs = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    prob_of_truth = probs * labels + (1.0 - probs) * (1.0 - labels)
    loss = cross_entropy * (1.0 - prob_of_truth) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * labels + (1.0 - alpha) * (1.0 - labels))
    return loss.flatten(1).mean(1).mean()


# --------------------------------------------------------------------------------------------
# HQ-SAM loss (SPT, LoRA and adapter baselines)
# --------------------------------------------------------------------------------------------


@in_fp32
def point_sampled_bce_dice(
    logits: torch.Tensor, targets: torch.Tensor, coords: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE and Dice between logits and targets read at the same points.

    logits: (B, 1, h, w); targets: (B, 1, H, W) in [0, 1], any resolution; coords: (B, P, 2)
    as in :func:`point_sample`. Targets are sampled bilinearly too, so points on a mask edge get
    soft labels. Returns (bce, dice), each a scalar averaged over points and then over masks.
    """
    point_logits = point_sample(logits, coords).squeeze(1)  # (B, P)
    point_targets = point_sample(targets.to(logits.dtype), coords).squeeze(1)  # (B, P)
    return bce_loss(point_logits, point_targets), dice_loss(point_logits, point_targets)


@in_fp32
def hq_sam_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    num_points: int = HQ_SAM_NUM_POINTS,
    oversample_ratio: float = HQ_SAM_OVERSAMPLE_RATIO,
    importance_sample_ratio: float = HQ_SAM_IMPORTANCE_SAMPLE_RATIO,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HQ-SAM's mask loss: BCE + Dice on uncertainty-sampled points (the SPT training recipe).

    logits: (B, 1, h, w) low-resolution decoder output (SAM: 256x256); targets: (B, 1, H, W)
    float in {0, 1} at any resolution (e.g. the 1024x1024 input frame). Points are chosen by
    :func:`select_uncertain_points` without gradient; gradient flows only through the sampled
    logits. Returns (bce, dice), scalars; HQ-SAM adds them with weight 1 each.
    """
    if targets.dim() != 4 or targets.shape[:2] != logits.shape[:2]:
        raise ValueError(
            f"expected targets (B,1,H,W) matching logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    coords = select_uncertain_points(
        logits.detach(), generator, num_points, oversample_ratio, importance_sample_ratio
    )
    return point_sampled_bce_dice(logits, targets, coords)


# --------------------------------------------------------------------------------------------
# WeSAM terms
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def mask_iou(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IoU between the thresholded prediction (logit > 0) and a label mask (> 0.5), per mask.

    logits, labels: (B, ...) with the same shape. Returns (B,) float. Two empty masks agree
    perfectly, so their IoU is 1 (WeSAM's code returns 0 there through its epsilon).
    """
    _check_same_shape(logits, labels)
    predicted = logits.flatten(1) > 0
    truth = labels.flatten(1) > 0.5
    intersection = (predicted & truth).sum(1).float()
    union = (predicted | truth).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp_min(1.0), torch.ones_like(union))


@in_fp32
def iou_head_loss(
    predicted_iou: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """MSE between SAM's IoU-head score and the IoU its mask actually reaches.

    predicted_iou: (B,) or (B, 1); logits, labels: (B, ...) same shape (WeSAM: student logits and
    the teacher's pseudo-label). The actual IoU is :func:`mask_iou` (threshold 0 on logits;
    WeSAM's code thresholds logits at 0.5, taken here as a probability-vs-logit slip).
    Gradient reaches only ``predicted_iou``. Returns a scalar, mean over masks.
    """
    actual = mask_iou(logits, labels).to(predicted_iou.dtype)
    return F.mse_loss(predicted_iou.reshape(-1), actual)


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")


def default_loss_points(low_res: int) -> int:
    """HQ-SAM's 112 x 112 points, capped at one point per low-res logit: 12,544 for the
    published backbones (256 x 256 logits), 1,024 for ``tiny`` (32 x 32), where more points
    would only resample the same logits."""
    return min(112 * 112, low_res * low_res)
