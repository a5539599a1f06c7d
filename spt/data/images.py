"""Reading the prepared images and masks: the one place the suite decodes image files.

Evaluation, training and the report's figures all read through these two functions, so an
image means the same pixels to each of them. Both read files that ``spt prepare`` wrote or
listed; a missing or unreadable one is a one-line SuiteError that says to rerun it.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spt.errors import SuiteError


def _check_digest(path: Path, what: str, data: bytes, sha256: str) -> None:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SuiteError(
            f"{path}: {what} changed since `spt prepare` (its sha256 is not the manifest's); "
            "rerun `spt prepare`, or restore the file"
        )


def check_unchanged(path: Path, sha256: str | None, what: str = "image") -> None:
    """A SuiteError when the file is no longer the one `spt prepare` hashed (``sha256``, the
    manifest's; nothing to check when it is empty). For readers that check once and decode
    later, such as training, which reads each image every epoch."""
    if not sha256:
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"{path}: unreadable {what} ({exc}); rerun `spt prepare`") from None
    _check_digest(path, what, data, sha256)


def _read_image(path: Path, mode: str, what: str, sha256: str | None = None) -> np.ndarray:
    """Image file -> uint8 array in PIL ``mode``; a missing or unreadable file is a SuiteError,
    and so is a file whose sha256 is not ``sha256`` (when given: the manifest's)."""
    if path.exists() and not path.is_file():  # a FIFO would block the read, a device not end
        raise SuiteError(
            f"{path}: {what} is not a regular file (a pipe or a device?); rerun `spt prepare`"
        )
    try:
        source: Path | io.BytesIO = path
        if sha256:  # one read: the bytes hashed are the bytes decoded
            data = path.read_bytes()
            _check_digest(path, what, data, sha256)
            source = io.BytesIO(data)
        with Image.open(source) as image:
            return np.array(image.convert(mode))
    except FileNotFoundError:
        raise SuiteError(f"{path}: {what} not found; rerun `spt prepare`") from None
    except Image.DecompressionBombError as exc:  # a tiny file that decodes to gigabytes
        raise SuiteError(
            f"{path}: {what} too large to decode ({exc}); rerun `spt prepare`"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise SuiteError(f"{path}: unreadable {what} ({exc}); rerun `spt prepare`") from None


def read_rgb(path: Path, sha256: str | None = None) -> np.ndarray:
    """Image file -> uint8 (H,W,3); with ``sha256`` (the manifest's ``image_sha256``) the file
    must still be the one `spt prepare` hashed."""
    return _read_image(path, "RGB", "image", sha256)


def read_mask(path: Path) -> np.ndarray:
    """Normalised mask file -> uint8 (H,W) 0/255."""
    return _read_image(path, "L", "mask")
