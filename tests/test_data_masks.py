"""Mask normalisation: every mode to one 8-bit channel of 0/255, per convention."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from spt.data.masks import MaskFormatError, normalise_mask, raw_summary

# A mask with values on both sides of the > 128 threshold, and exactly at it.
GREY = np.array([[0, 100, 128], [129, 200, 255]], dtype=np.uint8)
EXPECTED = np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8)


def test_grey_threshold_is_strictly_above_128():
    out, note = normalise_mask(Image.fromarray(GREY, "L"), "threshold")
    assert note is None and out.dtype == np.uint8
    assert np.array_equal(out, EXPECTED)


def test_rgb_mask_uses_its_brightest_channel():
    rgb = np.stack([GREY] * 3, axis=2)
    out, note = normalise_mask(Image.fromarray(rgb, "RGB"), "threshold")
    assert np.array_equal(out, EXPECTED) and "RGB" in note
    # Pure red, green or blue annotations are foreground (luma would make red 76, blue 29).
    colours = np.zeros((1, 4, 3), np.uint8)
    colours[0, 0, 0] = colours[0, 1, 1] = colours[0, 2, 2] = 255
    colours[0, 3] = (120, 128, 60)  # no channel above 128
    out, _ = normalise_mask(Image.fromarray(colours, "RGB"), "threshold")
    assert out.tolist() == [[255, 255, 255, 0]]


def test_palette_mask_with_red_foreground_is_foreground():
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    out, note = normalise_mask(palette, "threshold")
    assert out.tolist() == [[0, 255]] and "palette" in note


def test_raw_summary_counts_stored_values():
    assert raw_summary(Image.fromarray(np.array([[0, 1, 2, 0]], np.uint8), "L")) == (2, 2)
    wide = _png_roundtrip(np.array([[0, 1000, 1000]], np.uint16))
    assert raw_summary(wide) == (2, 1000)
    rgb = np.zeros((1, 2, 3), np.uint8)
    rgb[0, 1] = (0, 40, 7)
    assert raw_summary(Image.fromarray(rgb, "RGB")) == (1, 40)


def test_rgba_transparent_pixels_are_background():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = np.array([[0, 0, 0], [255, 255, 255]])
    out, note = normalise_mask(Image.fromarray(rgba, "RGBA"), "threshold")
    assert np.array_equal(out, EXPECTED) and "RGBA" in note


def _png_roundtrip(array: np.ndarray) -> Image.Image:
    """Decode a real 16-bit PNG, as the prepare step would meet one."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_sixteen_bit_is_scaled_before_the_threshold():
    wide = (GREY.astype(np.uint16) * 257).astype(np.uint16)  # 8-bit value v -> 16-bit v*257
    image = _png_roundtrip(wide)
    assert image.mode.startswith("I")
    out, note = normalise_mask(image, "threshold")
    assert np.array_equal(out, EXPECTED) and "16-bit" in note
    # 0/1 class ids in a 16-bit file are not foreground under the threshold convention...
    ones = _png_roundtrip(np.array([[0, 1]], np.uint16))
    assert normalise_mask(ones, "threshold")[0].max() == 0
    # ...but are under VisA's class-id convention.
    assert normalise_mask(ones, "nonzero")[0].tolist() == [[0, 255]]


def test_palette_mask_goes_through_its_colours():
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 255, 255, 60, 60, 60] + [0] * (256 * 3 - 9))
    out, note = normalise_mask(palette, "threshold")
    assert out.tolist() == [[0, 255], [0, 255]] and "palette" in note
    # Class-id convention: the palette index is the class id.
    assert normalise_mask(palette, "nonzero")[0].tolist() == [[0, 255], [255, 255]]


def test_one_bit_mask_is_binary_already():
    bits = Image.fromarray(np.array([[0, 1]], dtype=bool))
    out, note = normalise_mask(bits, "threshold")
    assert out.tolist() == [[0, 255]] and note is None


def test_visa_class_ids_are_foreground():
    ids = Image.fromarray(np.array([[0, 1, 2, 0]], np.uint8), "L")
    assert normalise_mask(ids, "nonzero")[0].tolist() == [[0, 255, 255, 0]]
    assert normalise_mask(ids, "threshold")[0].max() == 0  # why VisA needs its own rule


def test_unsupported_mode_and_convention():
    with pytest.raises(MaskFormatError, match="mode F"):
        normalise_mask(Image.fromarray(np.zeros((2, 2), np.float32), "F"), "threshold")
    with pytest.raises(ValueError, match="convention"):
        normalise_mask(Image.fromarray(GREY, "L"), "otsu")
