"""Losses checked against independent computations: torchvision, dense PyTorch ops, naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from baselines import wesam_losses
from spt.training import losses


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _naive_bilinear(image: torch.Tensor, x: float, y: float) -> float:
    """Bilinear read of a (H, W) map at normalised (x, y), zeros outside, pixel centres at +0.5."""
    height, width = image.shape
    col, row = x * width - 0.5, y * height - 0.5
    col0, row0 = math.floor(col), math.floor(row)
    total = 0.0
    for r, wr in ((row0, 1 - (row - row0)), (row0 + 1, row - row0)):
        for c, wc in ((col0, 1 - (col - col0)), (col0 + 1, col - col0)):
            if 0 <= r < height and 0 <= c < width:
                total += wr * wc * float(image[r, c])
    return total


def _pixel_centres(batch: int, height: int, width: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    xy = torch.stack([(cols + 0.5) / width, (rows + 0.5) / height], dim=-1).reshape(1, -1, 2)
    return xy.expand(batch, -1, -1).float()


# --- point sampling -------------------------------------------------------------------------


def test_point_sample_matches_naive_bilinear_at_hand_points():
    values = torch.arange(20, dtype=torch.float32).reshape(1, 1, 4, 5) * 0.7 - 3.0
    points = [(0.5, 0.5), (0.1, 0.9), (0.0, 0.0), (1.0, 0.37), (0.33, 0.125), (0.999, 0.001)]
    coords = torch.tensor([points], dtype=torch.float32)
    sampled = losses.point_sample(values, coords)
    assert sampled.shape == (1, 1, len(points))
    for k, (x, y) in enumerate(points):
        assert sampled[0, 0, k].item() == pytest.approx(
            _naive_bilinear(values[0, 0], x, y), abs=1e-5
        )


def test_point_sample_reads_pixel_values_exactly_at_centres():
    values = torch.randn(2, 1, 3, 7, generator=_generator(0))
    sampled = losses.point_sample(values, _pixel_centres(2, 3, 7))
    torch.testing.assert_close(sampled, values.reshape(2, 1, -1))


# --- uncertain point selection ----------------------------------------------------------------


def test_selected_points_are_the_most_uncertain_candidates():
    logits = torch.randn(2, 1, 9, 11, generator=_generator(1)) * 4
    num_points, ratio, importance = 40, 3.0, 0.75
    coords = losses.select_uncertain_points(logits, _generator(7), num_points, ratio, importance)
    assert coords.shape == (2, num_points, 2)
    assert not coords.requires_grad

    # Replay the generator: the first draw is the candidate set; rank it with the naive reader.
    candidates = torch.rand(2, int(num_points * ratio), 2, generator=_generator(7))
    num_uncertain = int(importance * num_points)
    for b in range(2):
        abs_logit = [abs(_naive_bilinear(logits[b, 0], x, y)) for x, y in candidates[b].tolist()]
        expected = candidates[b][np.argsort(abs_logit, kind="stable")[:num_uncertain]]
        chosen = coords[b, :num_uncertain]
        # Same set of points (order within the top-k is not part of the contract).
        same = (expected[:, None, :] == chosen[None, :, :]).all(dim=-1)
        assert torch.all(same.any(dim=1)) and torch.all(same.any(dim=0))


def test_uncertain_points_fall_in_the_undecided_region():
    logits = torch.full((1, 1, 32, 32), 10.0)
    logits[..., 12:20] = 0.0  # columns 12..19 undecided: x in [0.375, 0.625]
    coords = losses.select_uncertain_points(logits, _generator(3), 200, 4.0, 1.0)
    xs = coords[0, :, 0]
    # Bilinear blur reaches half a pixel beyond the band.
    assert torch.all((xs > 11.5 / 32) & (xs < 20.5 / 32))


def test_random_share_of_points_is_uniform_not_uncertain():
    logits = torch.full((1, 1, 32, 32), 10.0)
    logits[..., 12:20] = 0.0
    coords = losses.select_uncertain_points(logits, _generator(3), 400, 3.0, 0.5)
    random_xs = coords[0, 200:, 0]
    assert torch.any(random_xs < 0.3) and torch.any(random_xs > 0.7)


# --- dense losses -----------------------------------------------------------------------------


def test_sigmoid_focal_loss_matches_torchvision():
    logits = torch.randn(3, 1, 8, 8, generator=_generator(4)) * 3
    targets = (torch.rand(3, 1, 8, 8, generator=_generator(5)) > 0.6).float()
    for alpha, gamma in ((0.25, 2.0), (0.5, 1.0), (-1.0, 2.0)):
        ours = losses.sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
        reference = torchvision.ops.sigmoid_focal_loss(
            logits, targets, alpha=alpha, gamma=gamma, reduction="mean"
        )
        torch.testing.assert_close(ours, reference)


def test_dice_loss_hand_computed():
    # sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75.
    logits = torch.tensor([[0.0, math.log(3.0), -100.0, 0.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # overlap 2 * (0.5 + 0.75) + 1 = 3.5; total (0.5 + 0.75 + 0 + 0.5) + 2 + 1 = 4.75.
    expected = 1.0 - 3.5 / 4.75
    assert losses.dice_loss(logits, targets).item() == pytest.approx(expected, abs=1e-6)


def test_dice_loss_averages_per_mask():
    logits = torch.tensor([[10.0, 10.0], [-10.0, 10.0]])
    targets = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    first = losses.dice_loss(logits[:1], targets[:1])
    second = losses.dice_loss(logits[1:], targets[1:])
    assert losses.dice_loss(logits, targets).item() == pytest.approx((first + second).item() / 2)
    assert first.item() < 1e-3 < 0.5 < second.item()


# --- HQ-SAM loss ------------------------------------------------------------------------------


def test_point_losses_on_every_pixel_centre_equal_dense_losses():
    logits = torch.randn(2, 1, 6, 5, generator=_generator(6)) * 2
    targets = (torch.rand(2, 1, 6, 5, generator=_generator(8)) > 0.5).float()
    bce, dice = losses.point_sampled_bce_dice(logits, targets, _pixel_centres(2, 6, 5))
    dense_bce = F.binary_cross_entropy_with_logits(logits, targets)
    probs = logits.sigmoid().flatten(1)
    flat = targets.flatten(1)
    dense_dice = (1 - (2 * (probs * flat).sum(1) + 1) / (probs.sum(1) + flat.sum(1) + 1)).mean()
    torch.testing.assert_close(bce, dense_bce)
    torch.testing.assert_close(dice, dense_dice)


def test_hq_sam_loss_samples_targets_at_their_own_resolution():
    # A low-res prediction equal to the high-res target downsampled: loss must see agreement.
    target = torch.zeros(1, 1, 64, 64)
    target[..., 16:48, 16:48] = 1.0
    good = (F.avg_pool2d(target, 4) * 2 - 1) * 20  # (1, 1, 16, 16), +-20 away from the edges
    shifted = torch.roll(good, shifts=6, dims=-1)
    gen_seed = 11
    good_bce, good_dice = losses.hq_sam_loss(good, target, _generator(gen_seed), num_points=256)
    bad_bce, bad_dice = losses.hq_sam_loss(shifted, target, _generator(gen_seed), num_points=256)
    assert good_bce < bad_bce and good_dice < bad_dice


def test_hq_sam_loss_gradient_reaches_logits_and_is_deterministic():
    logits = torch.randn(2, 1, 16, 16, generator=_generator(9), requires_grad=True)
    targets = (torch.rand(2, 1, 64, 64, generator=_generator(10)) > 0.5).float()
    bce, dice = losses.hq_sam_loss(logits, targets, _generator(2), num_points=100)
    (bce + dice).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    again = losses.hq_sam_loss(logits, targets, _generator(2), num_points=100)
    other = losses.hq_sam_loss(logits, targets, _generator(3), num_points=100)
    assert torch.equal(torch.stack(again), torch.stack((bce, dice)))
    assert not torch.equal(torch.stack(other), torch.stack((bce, dice)))


def test_hq_sam_loss_default_point_budget_runs():
    logits = torch.randn(1, 1, 32, 32, generator=_generator(12))
    targets = (torch.rand(1, 1, 128, 128, generator=_generator(13)) > 0.5).float()
    bce, dice = losses.hq_sam_loss(logits, targets, _generator(0))
    assert bce.shape == () and dice.shape == () and bce > 0 and 0 < dice < 1


# --- WeSAM terms ------------------------------------------------------------------------------


def test_mask_iou_hand_computed_and_empty_case():
    logits = torch.tensor([[3.0, 3.0, -1.0, 2.0], [-1.0, -1.0, -1.0, -1.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    # first: predicted {0, 1, 3}, truth {0, 2, 3}: intersection 2, union 4.
    torch.testing.assert_close(losses.mask_iou(logits, labels), torch.tensor([0.5, 1.0]))


def test_iou_head_loss_is_mse_to_actual_iou():
    logits = torch.tensor([[[3.0, 3.0], [-1.0, 2.0]], [[1.0, -1.0], [-1.0, -1.0]]])
    labels = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    predicted = torch.tensor([[0.9], [0.4]], requires_grad=True)
    loss = losses.iou_head_loss(predicted, logits, labels)
    expected = ((0.9 - 0.5) ** 2 + (0.4 - 1.0) ** 2) / 2
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert predicted.grad is not None


def test_anchor_loss_is_half_dice_of_each_against_thresholded_anchor():
    student = torch.randn(2, 1, 5, 5, generator=_generator(14))
    teacher = torch.randn(2, 1, 5, 5, generator=_generator(15))
    anchor = torch.randn(2, 1, 5, 5, generator=_generator(16), requires_grad=True)
    hard = (anchor.detach() > 0).float()

    def reference_dice(logits: torch.Tensor) -> torch.Tensor:
        values = []
        for b in range(logits.shape[0]):
            p, t = logits[b].sigmoid().flatten(), hard[b].flatten()
            values.append(1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1))
        return torch.stack(values).mean()

    expected = 0.5 * reference_dice(student) + 0.5 * reference_dice(teacher)
    loss = wesam_losses.anchor_loss(student, teacher, anchor)
    torch.testing.assert_close(loss, expected)
    assert not loss.requires_grad  # the anchor's mask is a constant target


def test_pseudo_labels_threshold_at_zero_without_gradient():
    logits = torch.tensor([-0.1, 0.0, 0.2], requires_grad=True)
    labels = wesam_losses.pseudo_labels(logits)
    assert labels.tolist() == [0.0, 0.0, 1.0] and not labels.requires_grad


# --- contrastive ------------------------------------------------------------------------------


def _two_region_embedding() -> tuple[torch.Tensor, torch.Tensor]:
    """(C=4, 8, 8) embedding with distinct features left / right, masks (2, 32, 32)."""
    embedding = torch.zeros(4, 8, 8)
    embedding[:, :, :4] = torch.tensor([1.0, 0.2, 0.0, 0.0]).view(4, 1, 1)
    embedding[:, :, 4:] = torch.tensor([0.0, 0.1, 1.0, 0.3]).view(4, 1, 1)
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 4:28, 2:14] = True
    masks[1, 8:20, 18:30] = True
    return embedding, masks


def test_instance_features_match_naive_pooling():
    embedding = torch.randn(3, 4, 4, generator=_generator(17))
    masks = torch.zeros(2, 8, 8)
    masks[0, 0:4, 0:6] = 1.0
    masks[1, 5:8, 2:3] = 1.0
    features = wesam_losses.instance_features(embedding, masks)
    for n in range(2):
        total_weight, accumulated = 0.0, torch.zeros(3)
        for i in range(4):
            for j in range(4):
                coverage = masks[n, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean().item()
                location = embedding[:, i, j] / embedding[:, i, j].norm()
                accumulated += coverage * location
                total_weight += coverage
        expected = accumulated / total_weight
        torch.testing.assert_close(features[n], expected / expected.norm())


def test_contrastive_is_exactly_zero_with_one_instance():
    embedding, masks = _two_region_embedding()
    for form in ("infonce", "wesam"):
        loss = wesam_losses.instance_contrastive_loss(
            embedding, embedding, masks[:1], masks[:1], form=form
        )
        assert loss.item() == 0.0


def test_contrastive_matches_reference_and_is_positive_with_two_instances():
    teacher = torch.randn(6, 8, 8, generator=_generator(18))
    anchor = torch.randn(6, 8, 8, generator=_generator(19))
    masks = torch.rand(3, 16, 16, generator=_generator(20)) > 0.5
    u = wesam_losses.instance_features(teacher, masks)
    v = wesam_losses.instance_features(anchor, masks)
    scores = [[float(u[k] @ v[j]) / 0.3 for j in range(3)] for k in range(3)]
    infonce = (
        sum(
            -math.log(math.exp(scores[k][k]) / sum(math.exp(s) for s in scores[k]))
            for k in range(3)
        )
        / 3
    )
    pooled = -math.log(
        sum(math.exp(scores[k][k]) for k in range(3))
        / sum(math.exp(s) for row in scores for s in row)
    )
    ours = wesam_losses.instance_contrastive_loss(teacher, anchor, masks, masks)
    ours_wesam = wesam_losses.instance_contrastive_loss(teacher, anchor, masks, masks, form="wesam")
    assert ours.item() == pytest.approx(infonce, rel=1e-5)
    assert ours_wesam.item() == pytest.approx(pooled, rel=1e-5)
    assert ours.item() > 0 and ours_wesam.item() > 0


def test_contrastive_is_lower_when_instances_correspond():
    embedding, masks = _two_region_embedding()
    swapped = masks.flip(0)
    for form in ("infonce", "wesam"):
        matched = wesam_losses.instance_contrastive_loss(
            embedding, embedding, masks, masks, form=form
        )
        crossed = wesam_losses.instance_contrastive_loss(
            embedding, embedding, masks, swapped, form=form
        )
        assert 0 < matched < crossed


def test_contrastive_gradient_reaches_teacher_only():
    teacher = torch.randn(4, 8, 8, generator=_generator(21), requires_grad=True)
    anchor = torch.randn(4, 8, 8, generator=_generator(22), requires_grad=True)
    _, masks = _two_region_embedding()
    wesam_losses.instance_contrastive_loss(teacher, anchor, masks, masks).backward()
    assert teacher.grad is not None and teacher.grad.abs().sum() > 0
    assert anchor.grad is None


# --- instances --------------------------------------------------------------------------------


def test_instances_from_mask_uses_8_connectivity_and_min_area():
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[0, 0] = mask[1, 1] = 255  # diagonal neighbours: one component under 8-connectivity
    mask[5:8, 4:7] = 255  # 9 pixels
    mask[0, 7] = 1  # single pixel
    instances = wesam_losses.instances_from_mask(mask)
    assert [int(m.sum()) for m in instances] == [2, 1, 9]  # raster order of first pixels
    assert all(m.dtype == bool and m.shape == (8, 8) for m in instances)
    assert np.array_equal(np.logical_or.reduce(instances), mask > 0)
    assert [int(m.sum()) for m in wesam_losses.instances_from_mask(mask, min_area=2)] == [2, 9]
    assert wesam_losses.instances_from_mask(np.zeros((4, 4), dtype=bool)) == []
