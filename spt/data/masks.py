"""Mask normalisation: any raw mask -> one 8-bit channel holding 0 or 255.

Two foreground conventions. ``threshold`` (the official SPT convention, every dataset but VisA
and KSDD2): reduce to one 8-bit channel, then foreground = value > 128. ``nonzero`` (VisA,
whose raw masks hold class ids 1, 2, ..., and KSDD2, whose authors count any pixel > 0):
foreground = raw value != 0, before any conversion.

Reductions to one 8-bit channel under ``threshold``, each reported as a repair because the raw
file is not what the convention expects:

* RGB and palette (P): the brightest channel of each pixel's colour (``max(R, G, B)``), so an
  annotation drawn in pure red, green or blue is foreground as a white one is. (Luma would make
  pure red 76 and pure blue 29: background.) A grey colour (R = G = B) keeps its value.
* RGBA / LA / PA: the same times alpha, so transparent pixels are background whatever their colour.
* 16-bit (I;16, I): scaled to 8 bit by ``value * 255 / 65535`` before the threshold, so a
  16-bit 0/65535 mask and an 8-bit 0/255 mask give the same foreground.
* 1-bit: 0/255 (not a repair: it is already binary).

:func:`raw_summary` describes the stored values (how many are non-zero, the largest), which the
prepare step uses to tell an empty mask from one drawn in another convention.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THRESHOLD = 128
CONVENTIONS = ("threshold", "nonzero")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA")


class MaskFormatError(ValueError):
    """A mask mode the normaliser cannot interpret (e.g. floating point)."""


def _with_alpha(mask: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """(colour image without alpha, alpha as float 0..1 or None)."""
    if mask.mode == "P" and "transparency" in mask.info:
        mask = mask.convert("RGBA")
    elif mask.mode == "PA":
        mask = mask.convert("RGBA")
    if mask.mode in ("RGBA", "LA"):
        alpha = np.asarray(mask.getchannel("A"), dtype=np.float64) / 255.0
        return mask.convert("RGB" if mask.mode == "RGBA" else "L"), alpha
    return mask, None


def _grey8(mask: Image.Image) -> tuple[np.ndarray, str | None]:
    """One 8-bit channel and, when a conversion was needed, what it was."""
    mode = mask.mode
    if mode == "L":
        return np.asarray(mask, dtype=np.uint8), None
    if mode == "1":
        return np.asarray(mask.convert("L"), dtype=np.uint8), None
    if mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(mask, dtype=np.int64)
        scaled = np.rint(np.clip(wide, 0, 65535) * 255.0 / 65535.0).astype(np.uint8)
        return scaled, f"16-bit mask ({mode}) scaled to 8 bit"
    if mode not in ("RGB", "P", *_ALPHA_MODES):
        raise MaskFormatError(f"mask mode {mode} is not supported")
    colour, alpha = _with_alpha(mask)
    if colour.mode == "P":
        colour = colour.convert("RGB")
    values = np.asarray(colour, dtype=np.float64)
    brightest = values.max(axis=2) if values.ndim == 3 else values
    if alpha is not None:
        brightest = brightest * alpha
    what = {"RGB": "RGB", "P": "palette"}.get(mode, mode)
    note = f"{what} mask reduced to its brightest channel" + (
        " x alpha" if alpha is not None else ""
    )
    return np.rint(brightest).astype(np.uint8), note


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


def rule_text(convention: str) -> str:
    """The foreground rule of ``convention`` as report messages write it."""
    return f">{THRESHOLD}" if convention == "threshold" else "!= 0"


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


def raw_summary(mask: Image.Image) -> tuple[int, int]:
    """``(pixels whose stored value is not 0, largest stored value)``: the palette index for
    a palette mask, the largest channel for a colour one, the 16-bit value for a 16-bit one."""
    values = np.asarray(mask)
    if values.ndim == 3:
        values = values[..., :3].max(axis=2) if values.shape[2] >= 3 else values[..., 0]
    values = values.astype(np.int64)
    return int(np.count_nonzero(values)), int(values.max(initial=0))
