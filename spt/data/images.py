"""Reading the prepared images and masks: the one place the suite decodes image files.

Evaluation, training and the report's figures all read through these two functions, so an
image means the same pixels to each of them. Both read files that ``spt prepare`` wrote or
listed; a missing or unreadable one is a one-line SuiteError that says to rerun it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spt.errors import SuiteError


def _read_image(path: Path, mode: str, what: str) -> np.ndarray:
    """Image file -> uint8 array in PIL ``mode``; a missing or unreadable file is a SuiteError."""
    if path.exists() and not path.is_file():  # a FIFO would block the read, a device not end
        raise SuiteError(
            f"{path}: {what} is not a regular file (a pipe or a device?); rerun `spt prepare`"
        )
    try:
        with Image.open(path) as image:
            return np.array(image.convert(mode))
    except FileNotFoundError:
        raise SuiteError(f"{path}: {what} not found; rerun `spt prepare`") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise SuiteError(f"{path}: unreadable {what} ({exc}); rerun `spt prepare`") from None


def read_rgb(path: Path) -> np.ndarray:
    """Image file -> uint8 (H,W,3)."""
    return _read_image(path, "RGB", "image")


def read_mask(path: Path) -> np.ndarray:
    """Normalised mask file -> uint8 (H,W) 0/255."""
    return _read_image(path, "L", "mask")
