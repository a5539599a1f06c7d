"""Mask normalisation: any raw mask -> one 8-bit channel holding 0 or 255.

Two foreground conventions. ``threshold`` (the official SPT convention, every dataset but VisA):
convert to one 8-bit grey channel, then foreground = value > 128. ``nonzero`` (VisA, whose raw
masks hold class ids 1, 2, ...): foreground = raw value != 0, before any conversion.

Conversions to one 8-bit channel, each reported as a repair because the raw file is not
what the convention expects:

* RGB: ITU-R 601 luma (Pillow's ``convert("L")``).
* RGBA / LA: luma times alpha, so transparent pixels are background whatever their colour.
* palette (P): the palette's colours, then luma.
* 16-bit (I;16, I): scaled to 8 bit by ``value * 255 / 65535`` before the threshold, so a
  16-bit 0/65535 mask and an 8-bit 0/255 mask give the same foreground.
* 1-bit: 0/255 (not a repair: it is already binary).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THRESHOLD = 128
CONVENTIONS = ("threshold", "nonzero")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class MaskFormatError(ValueError):
    """A mask mode the normaliser cannot interpret (e.g. floating point)."""


def _grey8(mask: Image.Image) -> tuple[np.ndarray, str | None]:
    """One 8-bit channel and, when a conversion was needed, what it was."""
    mode = mask.mode
    if mode == "L":
        return np.asarray(mask, dtype=np.uint8), None
    if mode == "1":
        return np.asarray(mask.convert("L"), dtype=np.uint8), None
    if mode == "RGB":
        return np.asarray(mask.convert("L"), dtype=np.uint8), "RGB mask converted to grey (luma)"
    if mode in ("RGBA", "LA"):
        grey = np.asarray(mask.convert("L"), dtype=np.float64)
        alpha = np.asarray(mask.getchannel("A"), dtype=np.float64)
        weighted = np.rint(grey * alpha / 255.0).astype(np.uint8)
        return weighted, f"{mode} mask converted to grey (luma x alpha)"
    if mode == "P":
        grey = mask.convert("RGBA") if "transparency" in mask.info else mask.convert("RGB")
        array, _ = _grey8(grey)
        return array, "palette mask converted to grey via its palette"
    if mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(mask, dtype=np.int64)
        scaled = np.rint(np.clip(wide, 0, 65535) * 255.0 / 65535.0).astype(np.uint8)
        return scaled, f"16-bit mask ({mode}) scaled to 8 bit"
    raise MaskFormatError(f"mask mode {mode} is not supported")


def _nonzero(mask: Image.Image) -> tuple[np.ndarray, str | None]:
    """Foreground = any raw value != 0 (class-id masks)."""
    mode = mask.mode
    if mode in ("L", "1", "P") or mode in SIXTEEN_BIT_MODES:
        # For a palette mask the raw value is the index, which is the class id.
        note = None if mode in ("L", "1", "P") else f"16-bit mask ({mode}) read as class ids"
        return np.asarray(mask) != 0, note
    if mode in ("RGB", "RGBA", "LA"):
        colours = np.asarray(mask.convert("RGB"))
        foreground = colours.any(axis=2)
        if mode != "RGB":
            foreground &= np.asarray(mask.getchannel("A")) != 0
        return foreground, f"{mode} class-id mask: any non-zero colour is foreground"
    raise MaskFormatError(f"mask mode {mode} is not supported")


def normalise_mask(mask: Image.Image, convention: str) -> tuple[np.ndarray, str | None]:
    """``(uint8 array of 0/255, repair note or None)`` for a decoded mask."""
    if convention == "threshold":
        grey, note = _grey8(mask)
        foreground = grey > THRESHOLD
    elif convention == "nonzero":
        foreground, note = _nonzero(mask)
    else:
        raise ValueError(f"unknown mask convention {convention!r}; use one of {CONVENTIONS}")
    return np.where(foreground, 255, 0).astype(np.uint8), note
