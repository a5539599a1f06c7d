"""Augmentations: geometry keeps image and mask aligned, photometry leaves the mask alone, and
every output is a pure function of the generator seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import wesam_views
from spt.training import augment


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _square_scene(height: int = 60, width: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Dark textured image with a bright square; the mask is that square."""
    image = _rng(0).integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=bool)
    mask[15:45, 30:60] = True
    image[mask] = 250
    return image, mask


# --- flips ------------------------------------------------------------------------------------


def test_hflip_and_vflip_mirror_image_and_mask_together():
    image, mask = _square_scene()
    image_h, mask_h = augment.hflip(image, mask)
    image_v, mask_v = augment.vflip(image, mask)
    for row in (0, 17, 59):
        for col in (0, 31, 79):
            assert np.array_equal(image_h[row, col], image[row, 79 - col])
            assert mask_h[row, col] == mask[row, 79 - col]
            assert np.array_equal(image_v[row, col], image[59 - row, col])
            assert mask_v[row, col] == mask[59 - row, col]
    assert image_h.flags["C_CONTIGUOUS"] and mask_v.flags["C_CONTIGUOUS"]


def test_apply_flips_is_its_own_inverse_for_arrays_and_tensors():
    image, _ = _square_scene()
    logits = torch.randn(2, 1, 6, 7, generator=torch.Generator().manual_seed(0))
    for flips in (
        augment.Flips(True, False),
        augment.Flips(False, True),
        augment.Flips(True, True),
    ):
        assert not np.array_equal(augment.apply_flips(image, flips), image)
        assert np.array_equal(augment.apply_flips(augment.apply_flips(image, flips), flips), image)
        flipped = augment.apply_flips(logits, flips, axes=(-2, -1))
        assert torch.equal(augment.apply_flips(flipped, flips, axes=(-2, -1)), logits)
    both = augment.apply_flips(logits, augment.Flips(True, True), axes=(-2, -1))
    assert torch.equal(both[0, 0, 0, 0], logits[0, 0, -1, -1])


def test_weak_view_record_says_what_was_done_and_all_four_states_occur():
    image, mask = _square_scene()
    seen = set()
    for seed in range(40):
        weak_image, weak_mask, flips = wesam_views.weak_view(image, mask, _rng(seed))
        expected_image = image[:: -1 if flips.vertical else 1, :: -1 if flips.horizontal else 1]
        expected_mask = mask[:: -1 if flips.vertical else 1, :: -1 if flips.horizontal else 1]
        assert np.array_equal(weak_image, expected_image)
        assert np.array_equal(weak_mask, expected_mask)
        seen.add((flips.horizontal, flips.vertical))
    assert len(seen) == 4


def test_random_hflip_flips_only_horizontally():
    image, mask = _square_scene()
    outcomes = set()
    for seed in range(20):
        out_image, out_mask, flipped = augment.random_hflip(image, mask, _rng(seed))
        assert np.array_equal(out_image, image[:, ::-1] if flipped else image)
        assert np.array_equal(out_mask, mask[:, ::-1] if flipped else mask)
        outcomes.add(flipped)
    assert outcomes == {True, False}


# --- large-scale jitter -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_lsj_keeps_mask_binary_and_aligned_with_image(seed):
    image, mask = _square_scene()
    out_image, out_mask, record = augment.large_scale_jitter(
        image, mask, _rng(seed), output_size=96
    )
    assert out_image.shape == (96, 96, 3) and out_image.dtype == np.uint8
    assert out_mask.shape == (96, 96) and out_mask.dtype == bool

    # Independent expectation: map the square's edges through the recorded scale and crop.
    resized_h, resized_w = record.resized_hw
    crop_y, crop_x = record.crop_yx
    sy, sx = resized_h / 60, resized_w / 80
    top, bottom = 15 * sy - crop_y, 45 * sy - crop_y
    left, right = 30 * sx - crop_x, 60 * sx - crop_x
    rows, cols = np.mgrid[0:96, 0:96] + 0.5  # pixel centres
    inside = (rows > top) & (rows < bottom) & (cols > left) & (cols < right)
    content_h, content_w = record.content_hw
    inside[content_h:, :] = False
    inside[:, content_w:] = False
    # Nearest resizing may move an edge by at most half an output pixel; compare away from edges.
    margin = 1.0
    sure_in = (rows > top + margin) & (rows < bottom - margin)
    sure_in &= (cols > left + margin) & (cols < right - margin) & inside
    sure_out = ~((rows > top - margin) & (rows < bottom + margin))
    sure_out |= ~((cols > left - margin) & (cols < right + margin))
    assert np.all(out_mask[sure_in]) and not np.any(out_mask[sure_out])
    # The image's bright square sits where the mask is.
    bright = out_image.min(axis=-1) > 200
    assert np.all(bright[sure_in]) and not np.any(bright[sure_out])
    # Padding is zero in both.
    assert not out_image[content_h:].any() and not out_image[:, content_w:].any()
    assert not out_mask[content_h:].any() and not out_mask[:, content_w:].any()


def test_lsj_scale_follows_the_drawn_factor_and_covers_crop_and_pad():
    image, mask = _square_scene()
    crops, pads = 0, 0
    for seed in range(30):
        _, _, record = augment.large_scale_jitter(image, mask, _rng(seed), output_size=100)
        assert 0.1 <= record.scale <= 2.0
        assert max(record.resized_hw) == round(record.scale * 100)
        crops += max(record.resized_hw) > 100
        pads += min(record.content_hw) < 100
    assert crops > 0 and pads > 0


def test_lsj_keeps_integer_mask_values_and_dtype():
    image, mask = _square_scene()
    labelled = mask.astype(np.uint8) * 255
    _, out_mask, _ = augment.large_scale_jitter(image, labelled, _rng(3), output_size=64)
    assert out_mask.dtype == np.uint8 and set(np.unique(out_mask)) <= {0, 255}


def test_lsj_is_deterministic_per_seed():
    image, mask = _square_scene()
    first = augment.large_scale_jitter(image, mask, _rng(5), output_size=64)
    again = augment.large_scale_jitter(image, mask, _rng(5), output_size=64)
    other = augment.large_scale_jitter(image, mask, _rng(6), output_size=64)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert first[2] != other[2] and not np.array_equal(first[0], other[0])


# --- photometric ops --------------------------------------------------------------------------


def test_posterize_and_solarize_hand_computed():
    image = np.array([[[0b10110111, 127, 128], [255, 0, 15]]], dtype=np.uint8)
    assert wesam_views.posterize(image, 4).tolist() == [[[0b10110000, 112, 128], [240, 0, 0]]]
    assert wesam_views.solarize(image, 128).tolist() == [[[72, 127, 127], [0, 0, 15]]]


def test_brightness_contrast_hand_computed():
    image = np.array([[[100, 200, 0]]], dtype=np.uint8)
    out = wesam_views.adjust_brightness_contrast(image, brightness=0.1, contrast=0.2)
    # 100 * 1.2 + 25.5 = 145.5 -> 146 (round half to even); 200 * 1.2 + 25.5 -> 255; 0 -> 25.5 -> 26
    assert out.tolist() == [[[146, 255, 26]]] and out.dtype == np.uint8


def test_equalize_stretches_each_channel_monotonically():
    values = np.linspace(100, 140, 64).astype(np.uint8).reshape(8, 8)
    image = np.stack([values, values // 2, values], axis=-1)
    out = wesam_views.equalize(image)
    for c in range(3):
        order = np.argsort(image[..., c].ravel(), kind="stable")
        assert np.all(np.diff(out[..., c].ravel()[order].astype(int)) >= 0)
        assert out[..., c].max() == 255
        assert out[..., c].max() - out[..., c].min() > 200


def test_sharpen_matches_naive_convolution():
    image = _rng(1).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    alpha, lightness = 0.3, 0.7
    out = wesam_views.sharpen(image, alpha, lightness)
    padded = np.pad(image.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="reflect")
    expected = np.empty(image.shape)
    for r in range(5):
        for c in range(6):
            centre = padded[r + 1, c + 1]
            neighbours = padded[r : r + 3, c : c + 3].sum(axis=(0, 1)) - centre
            detail = 8 * centre - neighbours
            expected[r, c] = centre + alpha * ((lightness - 1) * centre + detail)
    assert np.array_equal(out, np.clip(np.rint(expected), 0, 255).astype(np.uint8))


def test_cast_shadow_darkens_inside_only():
    image = np.full((20, 20, 3), 200, dtype=np.uint8)
    square = np.array([[5, 5], [14, 5], [14, 14], [5, 14]], dtype=np.int32)
    out = wesam_views.cast_shadow(image, [square], darkness=0.5)
    assert np.all(out[5:15, 5:15] == 100)
    outside = np.ones((20, 20), dtype=bool)
    outside[5:15, 5:15] = False
    assert np.all(out[outside] == 200)


def test_every_photometric_op_keeps_dtype_shape_and_range():
    image = _rng(2).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    outputs = [
        wesam_views.posterize(image, 3),
        wesam_views.equalize(image),
        wesam_views.sharpen(image, 0.5, 0.5),
        wesam_views.solarize(image),
        wesam_views.adjust_brightness_contrast(image, 0.2, 0.2),
        wesam_views.adjust_brightness_contrast(image, -0.2, -0.2),
        wesam_views.cast_shadow(image, wesam_views.random_shadow_polygons(16, 16, _rng(3))),
    ]
    for out in outputs:
        assert out.dtype == np.uint8 and out.shape == image.shape


# --- strong view ------------------------------------------------------------------------------


def _replay(image: np.ndarray, ops: tuple[wesam_views.AppliedOp, ...]) -> np.ndarray:
    functions = {
        "posterize": wesam_views.posterize,
        "equalize": wesam_views.equalize,
        "sharpen": wesam_views.sharpen,
        "solarize": wesam_views.solarize,
        "brightness_contrast": wesam_views.adjust_brightness_contrast,
        "shadow": wesam_views.cast_shadow,
    }
    for op in ops:
        image = functions[op.name](image, **op.params)
    return image


def test_strong_view_record_replays_to_the_same_image():
    image, _ = _square_scene()
    seen = set()
    for seed in range(12):
        strong, ops = wesam_views.strong_view(image, _rng(seed))
        assert strong.dtype == np.uint8 and strong.shape == image.shape
        assert np.array_equal(_replay(image, ops), strong)
        seen.update(op.name for op in ops)
    assert len(seen) == 6


def test_strong_view_probability_extremes_and_order():
    image, _ = _square_scene()
    unchanged, none = wesam_views.strong_view(image, _rng(0), p=0.0)
    assert np.array_equal(unchanged, image) and none == ()
    _, every = wesam_views.strong_view(image, _rng(0), p=1.0)
    names = [op.name for op in every]
    assert names == [
        "posterize",
        "equalize",
        "sharpen",
        "solarize",
        "brightness_contrast",
        "shadow",
    ]


def test_weak_and_strong_views_share_flips_and_mask():
    image, mask = _square_scene()
    image_before, mask_before = image.copy(), mask.copy()
    views = wesam_views.weak_and_strong_views(image, mask, _rng(4))
    weak_image, weak_mask, flips = wesam_views.weak_view(image, mask, _rng(4))
    assert views.flips == flips
    assert np.array_equal(views.weak_image, weak_image)
    assert np.array_equal(views.mask, weak_mask)
    assert np.array_equal(_replay(views.weak_image, views.strong_ops), views.strong_image)
    # Inputs untouched.
    assert np.array_equal(image, image_before) and np.array_equal(mask, mask_before)


def test_strong_view_is_deterministic_per_seed():
    image, _ = _square_scene()
    first, first_ops = wesam_views.strong_view(image, _rng(8))
    again, _ = wesam_views.strong_view(image, _rng(8))
    assert np.array_equal(first, again)
    different = [
        not np.array_equal(first, wesam_views.strong_view(image, _rng(s))[0]) for s in range(9, 14)
    ]
    assert any(different) and first_ops


def test_bad_inputs_are_rejected():
    image, mask = _square_scene()
    with pytest.raises(ValueError):
        wesam_views.weak_view(image.astype(np.float32), mask, _rng(0))
    with pytest.raises(ValueError):
        augment.large_scale_jitter(image, mask[:-1], _rng(0))


def test_lsj_mask_is_centre_aligned_nearest_of_the_source():
    image = _rng(1).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    mask = _rng(2).random((7, 9)) > 0.5
    for seed in range(5):
        _, out_mask, record = augment.large_scale_jitter(image, mask, _rng(seed), output_size=40)
        resized_h, resized_w = record.resized_hw
        crop_y, crop_x = record.crop_yx
        content_h, content_w = record.content_hw
        expected = np.zeros((40, 40), dtype=bool)
        # Naive nearest: each output pixel centre reads the source pixel it falls in.
        for r in range(content_h):
            for c in range(content_w):
                src_r = min(int((r + crop_y + 0.5) * 7 / resized_h), 6)
                src_c = min(int((c + crop_x + 0.5) * 9 / resized_w), 8)
                expected[r, c] = mask[src_r, src_c]
        assert np.array_equal(out_mask, expected)


def test_outputs_never_alias_inputs():
    image, mask = _square_scene()
    no_flip = augment.apply_flips(image, augment.Flips(False, False))
    assert not np.shares_memory(no_flip, image)
    for seed in range(4):
        weak_image, weak_mask, _ = wesam_views.weak_view(image, mask, _rng(seed))
        assert not np.shares_memory(weak_image, image) and not np.shares_memory(weak_mask, mask)
