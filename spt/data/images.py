"""Decoding image files: the one rule every stage applies, and the readers of prepared files.

The rule (:func:`open_checked` then :func:`rgb8`), applied by ``spt prepare`` to every raw image
and mask and again by training, evaluation and the report's figures whenever they decode one, so
a file means the same pixels to each of them:

* At most :data:`MAX_IMAGE_PIXELS` pixels (width x height), checked from the header before any
  pixel is decoded: a larger file (or a tiny file that claims gigapixels) is refused in one line.
* EXIF orientation: the suite reads pixels as stored. A file whose EXIF orientation tag asks a
  viewer to rotate or flip it (any value but 1) is refused, because its mask may have been drawn
  on the stored pixels or on the displayed ones and nothing in the files says which.
* Colour images: 8-bit RGB as stored; grey, palette, CMYK and the like converted to RGB by Pillow;
  an alpha channel is dropped (the colour is kept, not composited).
* 16-bit images (grey ``I;16``, ``I``): scaled to 8 bit by ``value * 255 / 65535`` (rounded),
  never clipped, so a 16-bit image shows the scene an 8-bit export of it would. Pillow itself
  converts 16-bit grey to RGB by clipping at 255, which turns most such images white.
* Floating-point images are refused: there is no agreed range to map to 0..255.

Evaluation, training and the report's figures read through :func:`read_rgb` and
:func:`read_mask`; a missing or unreadable file is a one-line SuiteError that says to rerun
``spt prepare``.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spt.errors import SuiteError

# 64 million pixels (8000 x 8000): above every published industrial dataset (MVTec AD 2's
# largest images are about 4k x 3k), below what a 24 GiB machine can hold through prepare
# (about 15 bytes per pixel) and training (about 30). Pillow's own bomb limit is 89 million.
MAX_IMAGE_PIXELS = 64_000_000
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ORIENTATION_TAG = 0x0112  # EXIF "Orientation"; 1 = as stored
_ORIENTATIONS = {
    2: "mirrored",
    3: "rotated 180 degrees",
    4: "flipped",
    5: "mirrored and rotated",
    6: "rotated 90 degrees",
    7: "mirrored and rotated",
    8: "rotated 270 degrees",
}


class ImageFormatError(ValueError):
    """A file the decoding rule refuses; the message says why and what to do."""


def check_pixel_count(image: Image.Image) -> None:
    """Refuse an image larger than :data:`MAX_IMAGE_PIXELS` (from its header: nothing decoded)."""
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageFormatError(
            f"{width}x{height} is {width * height / 1e6:.1f} million pixels, above the suite's "
            f"limit of {MAX_IMAGE_PIXELS / 1e6:.0f} million; downscale or tile it before preparing"
        )


def check_orientation(image: Image.Image) -> None:
    """Refuse an image whose EXIF orientation asks viewers to rotate or flip it."""
    try:
        orientation = image.getexif().get(ORIENTATION_TAG)
    except Exception:  # a malformed EXIF block: the pixels are still read as stored
        return
    if orientation in (None, 1):
        return
    shown = _ORIENTATIONS.get(orientation, f"value {orientation}")
    raise ImageFormatError(
        f"EXIF orientation {orientation} ({shown} for display): the suite reads pixels as stored, "
        "so a mask drawn on the displayed image would not line up; save the file with the "
        "rotation applied (PIL.ImageOps.exif_transpose) and its mask drawn on that, or remove "
        "the tag if the mask was drawn on the stored pixels"
    )


def open_checked(source: Path | io.BytesIO) -> Image.Image:
    """Open, check the size from the header, decode fully (``load``, so a truncated file fails
    here) and check the orientation. Raises ImageFormatError for what the rule refuses, and
    Pillow's own errors (UnidentifiedImageError, OSError) for files it can not decode."""
    with warnings.catch_warnings():
        # Pillow warns before its own bomb error; the suite's limit is lower and reports itself.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(source)
        try:
            check_pixel_count(image)
            image.load()
            check_orientation(image)
        except BaseException:
            image.close()
            raise
    return image


def rgb8(image: Image.Image) -> tuple[np.ndarray, str | None]:
    """The rule's pixels: ``(uint8 (H,W,3), conversion note or None)``.

    The note is set when the stored values were rescaled (16-bit), which the prepare report
    lists as a repair."""
    mode = image.mode
    if mode == "RGB":  # np.array: a writable copy, as callers hand it to torch
        return np.array(image, dtype=np.uint8), None
    if mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.int64)
        if mode == "I" and (wide.min() < 0 or wide.max() > 65535):
            raise ImageFormatError(
                "32-bit integer image with values outside 0..65535; save it as 8- or 16-bit"
            )
        grey = np.rint(wide * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), f"16-bit image ({mode}) scaled to 8 bit"
    if mode.startswith("F"):
        raise ImageFormatError(
            f"floating-point image (mode {mode}) has no agreed 0..255 range; save it as 8- or 16-bit"
        )
    try:
        return np.array(image.convert("RGB"), dtype=np.uint8), None
    except (ValueError, OSError) as exc:
        raise ImageFormatError(f"image mode {mode} can not be converted to RGB ({exc})") from None


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


def _read_image(path: Path, what: str, sha256: str | None = None) -> Image.Image:
    """Image file -> decoded image under the rule; a missing, unreadable or refused file is a
    SuiteError, and so is a file whose sha256 is not ``sha256`` (when given: the manifest's)."""
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
        return open_checked(source)
    except FileNotFoundError:
        raise SuiteError(f"{path}: {what} not found; rerun `spt prepare`") from None
    except ImageFormatError as exc:
        raise SuiteError(f"{path}: {what} refused: {exc}") from None
    except Image.DecompressionBombError as exc:  # a tiny file that decodes to gigabytes
        raise SuiteError(
            f"{path}: {what} too large to decode ({exc}); rerun `spt prepare`"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise SuiteError(f"{path}: unreadable {what} ({exc}); rerun `spt prepare`") from None


def read_rgb(path: Path, sha256: str | None = None) -> np.ndarray:
    """Image file -> uint8 (H,W,3) under the decoding rule; with ``sha256`` (the manifest's
    ``image_sha256``) the file must still be the one `spt prepare` hashed."""
    with _read_image(path, "image", sha256) as image:
        try:
            return rgb8(image)[0]
        except ImageFormatError as exc:
            raise SuiteError(f"{path}: image refused: {exc}") from None


def read_mask(path: Path, sha256: str | None = None) -> np.ndarray:
    """Normalised mask file (written by ``spt prepare``) -> uint8 (H,W) 0/255; with ``sha256``
    (the manifest's ``prepared_mask_sha256``) the file must still be the one prepare wrote."""
    with _read_image(path, "mask", sha256) as image:
        return np.array(image.convert("L"))
