"""WeSAM's own loss terms (CVPR 2024), kept beside the baseline: pseudo-labels from the
teacher, the anchor loss and the instance-wise contrastive loss. The shared terms (Dice, focal,
the IoU-head loss) are in :mod:`spt.training.losses`, whose conventions hold here too (raw
logits, float targets in [0, 1], per-mask means).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from spt.harness.compute import in_fp32
from spt.training.losses import dice_loss

WESAM_TEMPERATURE = 0.3


def pseudo_labels(teacher_logits: torch.Tensor) -> torch.Tensor:
    """WeSAM's pseudo-label: the teacher's mask, ``logits > 0``, as a float tensor, no gradient.

    teacher_logits: any shape; returns the same shape with values in {0, 1}.
    """
    return (teacher_logits.detach() > 0).to(teacher_logits.dtype)


@in_fp32
def anchor_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, anchor_logits: torch.Tensor
) -> torch.Tensor:
    """WeSAM's anchor regulariser: keep student and teacher close to the frozen SAM's mask.

    All (B, ...) with the same shape. ``0.5 * dice(student, anchor > 0) +
    0.5 * dice(teacher, anchor > 0)`` with :func:`dice_loss`; the anchor mask has no gradient.
    """
    anchor_mask = pseudo_labels(anchor_logits)
    return 0.5 * dice_loss(student_logits, anchor_mask) + 0.5 * dice_loss(
        teacher_logits, anchor_mask
    )


def instance_features(
    embedding: torch.Tensor, instance_masks: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """One unit-length feature per instance: the mask-weighted mean of the image embedding.

    embedding: (C, h, w) encoder output (SAM: 256x64x64); instance_masks: (N, H, W) bool or
    float weights in [0, 1] at any resolution. Returns (N, C), rows of L2 norm 1.

    Steps: L2-normalise each embedding location over channels (as WeSAM), resize every mask to
    (h, w) by area averaging, so a cell's weight is the fraction of it the instance covers,
    take the weighted mean, L2-normalise the result. WeSAM resizes its masks bilinearly instead;
    a 16x bilinear downsampling reads only a few input pixels per cell and can lose a small
    defect entirely, which area averaging cannot. An instance that covers nothing gives a zero
    feature (cosine 0 with everything). Masks carry no gradient.
    """
    if embedding.dim() != 3 or instance_masks.dim() != 3:
        raise ValueError(
            f"expected embedding (C,h,w) and masks (N,H,W), got {tuple(embedding.shape)}, "
            f"{tuple(instance_masks.shape)}"
        )
    unit_locations = F.normalize(embedding, dim=0)
    weights = instance_masks.detach().to(embedding.dtype).unsqueeze(1)  # (N, 1, H, W)
    weights = F.interpolate(weights, size=embedding.shape[-2:], mode="area").squeeze(1)
    pooled = torch.einsum("nhw,chw->nc", weights, unit_locations)
    pooled = pooled / weights.sum(dim=(1, 2)).clamp_min(eps).unsqueeze(1)
    return F.normalize(pooled, dim=1)


@in_fp32
def instance_contrastive_loss(
    teacher_embedding: torch.Tensor,
    anchor_embedding: torch.Tensor,
    teacher_masks: torch.Tensor,
    anchor_masks: torch.Tensor,
    temperature: float = WESAM_TEMPERATURE,
    form: Literal["infonce", "wesam"] = "infonce",
) -> torch.Tensor:
    """WeSAM's instance contrastive loss between the teacher's and the frozen anchor's features.

    teacher_embedding, anchor_embedding: (C, h, w) encoder outputs for one image (weak view).
    teacher_masks, anchor_masks: (N, H, W), row k = the mask each model predicts for prompt k
    (e.g. ``logits > 0``). WeSAM pools with its predicted masks too, but passes raw logits as
    the weights, so background locations weigh negatively; here weights must lie in [0, 1].
    With u_k = teacher feature and v_k = anchor feature of instance k
    (:func:`instance_features`) and s_kj = u_k . v_j / tau:

    - ``"infonce"`` (default): ``mean_k -log(exp(s_kk) / sum_j exp(s_kj))``; the positive of
      teacher instance k is the anchor instance from the same prompt, the negatives are the
      anchor's other instances.
    - ``"wesam"``: WeSAM's code, one ratio over the whole matrix:
      ``-log(sum_k exp(s_kk) / sum_kj exp(s_kj))``.

    With fewer than two instances there are no negatives: the softmax runs over a single
    candidate, equals 1, and the loss is log 1 = 0 with no gradient. This returns an exact 0
    then, so single-defect images contribute nothing (split masks with
    :func:`instances_from_mask` to give the term instances). The anchor side is detached: the
    anchor is the frozen original SAM. Returns a scalar.
    """
    if teacher_masks.shape[0] != anchor_masks.shape[0]:
        raise ValueError(
            f"teacher and anchor need one mask per prompt each, got {teacher_masks.shape[0]} "
            f"and {anchor_masks.shape[0]}"
        )
    if form not in ("infonce", "wesam"):
        raise ValueError(f"form must be 'infonce' or 'wesam', got {form!r}")
    num_instances = teacher_masks.shape[0]
    if num_instances < 2:
        return teacher_embedding.new_zeros(())
    teacher_features = instance_features(teacher_embedding, teacher_masks)
    anchor_features = instance_features(anchor_embedding.detach(), anchor_masks)
    scores = teacher_features @ anchor_features.T / temperature  # (N, N)
    if form == "infonce":
        same_prompt = torch.arange(num_instances, device=scores.device)
        return F.cross_entropy(scores, same_prompt)
    return scores.flatten().logsumexp(0) - scores.diagonal().logsumexp(0)


def instances_from_mask(mask: np.ndarray | torch.Tensor, min_area: int = 0) -> list[np.ndarray]:
    """Split a mask into its 8-connected components, one (H, W) bool array each.

    mask: (H, W), foreground where > 0 (threshold 0-255 masks first). Components smaller than
    ``min_area`` pixels are dropped. Order: OpenCV's label order, i.e. by the raster-scan
    position of each component's first pixel, so the split is deterministic.
    """
    foreground = np.asarray(mask) > 0
    if foreground.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {foreground.shape}")
    count, labels = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
    components = (labels == label for label in range(1, count))
    return [component for component in components if int(component.sum()) >= min_area]
