"""Image corruptions: shapes and purity, determinism and keying, strength by severity,
independent references, and the one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from spt.data.stable_random import stable_rng
from spt.errors import SuiteError
from spt.harness.corruptions import (
    CORRUPTIONS,
    MAX_SEVERITY,
    check_corruption,
    corrupt,
    corruption_label,
    defocus_radius,
    disk_mean,
    disk_offsets,
    line_offsets,
    motion_length,
    offset_mean,
    parse_corruption,
)

SEVERITIES = range(1, MAX_SEVERITY + 1)
KEYED = ("gaussian_noise", "motion_blur")  # the two that draw from the keyed generator
UNKEYED = tuple(name for name in CORRUPTIONS if name not in KEYED)


def textured(height: int = 96, width: int = 128, *, key: str = "texture") -> np.ndarray:
    """uint8 (H,W,3): a keyed random checkerboard of 2 px cells plus a horizontal gradient."""
    rng = stable_rng("test", key)
    cells = rng.integers(0, 160, size=((height + 1) // 2, (width + 1) // 2, 3))
    board = np.repeat(np.repeat(cells, 2, axis=0), 2, axis=1)[:height, :width]
    gradient = np.linspace(0, 90, width)[None, :, None]
    return np.clip(np.rint(board + gradient), 0, 255).astype(np.uint8)


def run(image: np.ndarray, name: str, severity: int, *, seed: int = 0, image_id: str = "a"):
    return corrupt(image, name, severity, seed=seed, image_id=image_id)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean())


# --- shapes, purity, severity 0 ---


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_severity_keeps_shape_and_dtype_and_leaves_the_input_alone(name):
    image = textured()
    before = image.copy()
    for severity in SEVERITIES:
        out = run(image, name, severity)
        assert out.dtype == np.uint8 and out.shape == image.shape, (name, severity)
        assert np.array_equal(image, before), f"{name}-{severity} modified its input"
        assert not np.array_equal(out, image), f"{name}-{severity} did not change the image"
        assert out is not image


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_zero_is_the_clean_image(name):
    image = textured()
    out = run(image, name, 0)
    assert out.dtype == np.uint8 and out.tobytes() == image.tobytes()


# --- determinism and keying ---


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_key_gives_identical_bytes_and_a_view_counts_as_its_bytes(name):
    image = textured()
    first = run(image, name, 3, seed=7, image_id="part-01")
    second = run(image.copy(), name, 3, seed=7, image_id="part-01")
    assert first.tobytes() == second.tobytes()
    flipped = image[:, ::-1]  # a non-contiguous view: the result depends on its values only
    assert run(flipped, name, 3).tobytes() == run(flipped.copy(), name, 3).tobytes()


@pytest.mark.parametrize("name", KEYED)
def test_image_id_and_seed_change_the_keyed_corruptions(name):
    image = textured()
    base = run(image, name, 4, seed=0, image_id="a")
    assert not np.array_equal(base, run(image, name, 4, seed=0, image_id="b"))
    assert not np.array_equal(base, run(image, name, 4, seed=1, image_id="a"))


@pytest.mark.parametrize("name", UNKEYED)
def test_the_other_corruptions_do_not_depend_on_the_key(name):
    image = textured()
    base = run(image, name, 4, seed=0, image_id="a")
    assert base.tobytes() == run(image, name, 4, seed=1, image_id="b").tobytes()


# --- strength grows with severity ---


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_strength_does_not_decrease_with_severity(name):
    # 240 px shorter side: there every severity has its own blur size (at 96 px motion blur
    # is 3 px long for severities 1..3, and its angle, keyed by severity, would decide the order).
    image = textured(240, 320)
    diffs = [mean_abs_diff(run(image, name, severity), image) for severity in SEVERITIES]
    assert all(a <= b for a, b in zip(diffs, diffs[1:], strict=False)), (name, diffs)
    assert diffs[0] > 0


def test_blur_sizes_scale_with_the_shorter_side():
    assert [defocus_radius(s, side=1600) for s in SEVERITIES] == [8, 16, 24, 32, 48]
    assert [motion_length(s, side=1600) for s in SEVERITIES] == [16, 32, 48, 72, 96]
    assert [defocus_radius(s, side=96) for s in SEVERITIES] == [1, 1, 1, 2, 3]
    assert [motion_length(s, side=96) for s in SEVERITIES] == [3, 3, 3, 4, 6]
    # the shorter side decides: a 1600 x 96 strip blurs like a 96 px image
    strip = textured(96, 400)
    assert np.array_equal(
        run(strip, "defocus_blur", 5), disk_mean(strip, defocus_radius(5, side=96))
    )


# --- independent references ---


def reference_disk_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """float64 disk mean (scipy, edge padding), rounded half up."""
    d = np.arange(-radius, radius + 1)
    kernel = (d[:, None] ** 2 + d[None, :] ** 2 <= radius**2).astype(np.float64)
    kernel /= kernel.sum()
    channels = [
        ndimage.correlate(image[:, :, c].astype(np.float64), kernel, mode="nearest")
        for c in range(image.shape[2])
    ]
    return np.floor(np.stack(channels, axis=2) + 0.5)


@pytest.mark.parametrize("severity", [1, 4, 5])
def test_defocus_blur_matches_a_float_reference(severity):
    image = textured(150, 200, key="small")  # s = 150: r = 1, 2, 2, 3, 5
    radius = defocus_radius(severity, side=150)
    out = run(image, "defocus_blur", severity)
    reference = reference_disk_blur(image, radius)
    assert np.abs(out.astype(np.float64) - reference).max() <= 1


def test_blur_means_round_half_up_exactly():
    # integer reference by clamped indexing: sum, then floor(sum / n + 1/2) as 2 sum + n // 2 n
    image = textured(17, 21, key="exact")
    rows, cols = np.indices(image.shape[:2])
    for offsets in (disk_offsets(3), line_offsets(6, 33.0), line_offsets(4, 120.0)):
        total = sum(
            image[np.clip(rows + dy, 0, 16), np.clip(cols + dx, 0, 20)].astype(np.int64)
            for dy, dx in offsets.tolist()
        )
        n = len(offsets)
        expected = ((2 * total + n) // (2 * n)).astype(np.uint8)
        assert np.array_equal(offset_mean(image, offsets), expected)
    assert np.array_equal(disk_mean(image, 3), offset_mean(image, disk_offsets(3)))


def test_disk_mean_equals_the_plain_sum_over_disk_offsets():
    image = textured(23, 31, key="odd")
    for radius in (1, 2, 5, 12):
        assert np.array_equal(disk_mean(image, radius), offset_mean(image, disk_offsets(radius)))


def test_disk_offsets_are_the_disk():
    offsets = disk_offsets(2)
    assert len(offsets) == 13  # the 5 x 5 square less its 12 pixels beyond radius 2
    assert set(map(tuple, offsets.tolist())) == {
        (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if dy * dy + dx * dx <= 4
    }


def test_line_offsets_have_length_distinct_pixels_along_the_angle():
    assert line_offsets(5, 0.0).tolist() == [[0, -2], [0, -1], [0, 0], [0, 1], [0, 2]]
    assert line_offsets(3, 90.0).tolist() == [[-1, 0], [0, 0], [1, 0]]
    assert line_offsets(3, 45.0 + 1e-9).tolist() == [[-1, -1], [0, 0], [1, 1]]
    assert line_offsets(3, 135.0 - 1e-9).tolist() == [[-1, 1], [0, 0], [1, -1]]
    rng = np.random.default_rng(0)
    for angle in rng.uniform(0, 180, 50):
        for length in (3, 4, 7, 16):
            offsets = line_offsets(length, float(angle))
            assert len({tuple(o) for o in offsets.tolist()}) == length
            assert [0, 0] in offsets.tolist()


def test_motion_blur_is_the_mean_along_its_line():
    image = textured(60, 80, key="motion")
    angle = float(stable_rng(0, "a", "corruption", "motion_blur", 5).uniform(0.0, 180.0))
    offsets = line_offsets(motion_length(5, side=60), angle)
    reach = int(np.abs(offsets).max())
    kernel = np.zeros((2 * reach + 1, 2 * reach + 1))
    kernel[offsets[:, 0] + reach, offsets[:, 1] + reach] = 1.0 / len(offsets)
    reference = np.stack(
        [
            ndimage.correlate(image[:, :, c].astype(np.float64), kernel, mode="nearest")
            for c in range(3)
        ],
        axis=2,
    )
    out = run(image, "motion_blur", 5)
    assert np.abs(out - np.floor(reference + 0.5)).max() <= 1


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_adds_a_fixed_shift_and_clips(severity):
    image = textured()
    shift = int(severity * 0.1 * 255 + 0.5)
    expected = np.minimum(image.astype(np.int64) + shift, 255).astype(np.uint8)
    assert np.array_equal(run(image, "brightness", severity), expected)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_blends_toward_the_mean_grey(severity):
    image = textured()
    factor = (0.6, 0.45, 0.3, 0.2, 0.1)[severity - 1]
    pixels = image.astype(np.float64)
    mean = pixels.mean()
    expected = np.clip(np.rint((pixels - mean) * factor + mean), 0, 255).astype(np.uint8)
    assert np.array_equal(run(image, "contrast", severity), expected)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_has_the_documented_sigma(severity):
    grey = np.full((64, 64, 3), 128, np.uint8)
    noise = run(grey, "gaussian_noise", severity).astype(np.float64) - 128
    sigma = (0.04, 0.08, 0.12, 0.18, 0.26)[severity - 1] * 255
    assert abs(noise.std() - sigma) <= 0.1 * sigma
    assert abs(noise.mean()) <= 0.05 * sigma


def test_jpeg_matches_a_direct_opencv_round_trip():
    import cv2

    image = textured()
    ok, encoded = cv2.imencode(".jpg", image[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 25])
    assert ok
    expected = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.array_equal(run(image, "jpeg", 3), expected)


# --- labels ---


def test_labels_round_trip():
    for name in CORRUPTIONS:
        for severity in range(MAX_SEVERITY + 1):
            label = corruption_label(name, severity)
            assert parse_corruption(label) == (name, severity)
    assert corruption_label("gaussian_noise", 3) == "gaussian_noise-3"
    assert corruption_label("jpeg", np.int64(2)) == "jpeg-2"


@pytest.mark.parametrize(
    "label", ["jpeg", "jpeg-", "jpeg-6", "jpeg--1", "jpeg-03", "fog-2", "jpeg-x", "-3"]
)
def test_bad_labels_are_one_line_errors(label):
    with pytest.raises(SuiteError) as caught:
        parse_corruption(label)
    message = str(caught.value)
    assert "\n" not in message and repr(label) in message


# --- bad input ---


def one_line_error(call) -> str:
    with pytest.raises(SuiteError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_name_lists_the_choices():
    message = one_line_error(lambda: run(textured(), "fog", 2))
    assert "corruption" in message and "'fog'" in message
    assert "use gaussian_noise, defocus_blur, motion_blur, jpeg, brightness, contrast" in message


@pytest.mark.parametrize("severity", [6, -1, True, 2.0, "3"])
def test_bad_severity_says_the_range(severity):
    message = one_line_error(lambda: run(textured(), "jpeg", severity))
    assert message.startswith("corruption:")
    assert repr(severity) in message and "severity must be an integer 0..5" in message


def test_check_corruption_names_where():
    message = one_line_error(lambda: check_corruption("blur", 1, "params.yaml eval.corruptions"))
    assert message.startswith("params.yaml eval.corruptions:")
    check_corruption("contrast", np.int32(5), "anywhere")  # numpy integers are severities


@pytest.mark.parametrize(
    "image, problem",
    [
        (textured().astype(np.float32), "float32"),
        (textured()[:, :, 0], "(96, 128)"),
        (textured()[:, :, :1], "(96, 128, 1)"),
        (np.zeros((0, 5, 3), np.uint8), "(0, 5, 3)"),
        ([[0, 0, 0]], "list"),
    ],
)
def test_bad_image_is_a_one_line_error(image, problem):
    message = one_line_error(lambda: corrupt(image, "jpeg", 1, seed=0, image_id="a"))
    assert "uint8 (H,W,3)" in message and problem in message
    # severity 0 checks the image too
    one_line_error(lambda: corrupt(image, "jpeg", 0, seed=0, image_id="a"))
