"""Per-image work of the prepare step: hash, decode, check and normalise one record.

A pure function of the record and its files, so it can run in any worker process in any order.
Every failure becomes an :class:`Issue` in the outcome; nothing here raises for bad data.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from spt.artifacts import replace_atomically
from spt.data.issues import Issue
from spt.data.manifest import mask_entry
from spt.data.masks import THRESHOLD, MaskFormatError, normalise_mask
from spt.data.records import NORMAL, ImageRecord

DEFECT_LABEL = "defect"
NORMAL_LABEL = "normal"
# Reading the path failed, not decoding it: a broken link or a folder where a mask should be.
_NOT_A_FILE = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


@dataclass
class Outcome:
    """What became of one record: a manifest row (or None) and the report entries it earned."""

    record: ImageRecord
    row: dict | None
    issues: list[Issue] = field(default_factory=list)
    defect_type: str = ""  # final defect type (label_from_mask records get it from the mask)


def _decode(data: bytes) -> Image.Image:
    """Fully decode (``load``) so a truncated file fails here, not in a later stage."""
    with warnings.catch_warnings():
        # Pillow warns on oversized images before raising; keep stderr clean, the error is reported.
        warnings.simplefilter("ignore")
        image = Image.open(io.BytesIO(data))
        image.load()
    return image


def _read(path: Path) -> tuple[bytes, str]:
    # A FIFO or a device would block the read (or never end): only regular files are read.
    if path.exists() and not path.is_file():
        raise OSError(f"{path} is not a regular file (a pipe or a device?)")
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def inspect_record(record: ImageRecord, convention: str, out_dir: Path) -> Outcome:
    """Check one record; write its normalised mask under ``out_dir`` (the manifest's folder) when
    it is a defect image. The row names the mask relative to ``out_dir`` (``masks/...``)."""
    outcome = Outcome(record, None, defect_type=record.defect_type)
    image_path = str(record.image_path)
    try:
        image_bytes, image_sha = _read(record.image_path)
        image = _decode(image_bytes)
    except Exception as exc:  # any decoder failure is a bad file, reported, never a crash
        outcome.issues.append(
            Issue(
                "skipped",
                "unreadable_image",
                image_path,
                f"corrupt or truncated image ({type(exc).__name__}: {exc})",
                "replace it with the publisher's original file",
            )
        )
        return outcome
    width, height = image.size
    row = {
        "image_id": record.image_id,
        "dataset": record.dataset,
        "category": record.category,
        "defect_type": record.defect_type,
        "label": NORMAL_LABEL if record.is_normal else DEFECT_LABEL,
        "split": record.split,
        "image_path": record.image_path.as_posix(),
        "mask_path": "",
        "height": height,
        "width": width,
        "mask_pixels": 0,
        "image_sha256": image_sha,
        "mask_sha256": "",
    }
    if record.mask_path is None:
        outcome.row = row
        return outcome

    mask_path = str(record.mask_path)
    try:
        mask_bytes, mask_sha = _read(record.mask_path)
        raw_mask = _decode(mask_bytes)
        binary, note = normalise_mask(raw_mask, convention)
    except MaskFormatError as exc:
        outcome.issues.append(
            Issue("skipped", "bad_mask_mode", mask_path, str(exc), "save the mask as 8-bit grey")
        )
        return outcome
    except Exception as exc:
        what = (
            "not a readable file" if isinstance(exc, _NOT_A_FILE) else "corrupt or truncated mask"
        )
        outcome.issues.append(
            Issue(
                "skipped",
                "unreadable_mask",
                mask_path,
                f"{what} ({type(exc).__name__}: {exc})",
                "replace it with the publisher's original file",
            )
        )
        return outcome
    if raw_mask.size != image.size:
        # Resizing would guess an alignment; a mismatched pair is more likely a wrong pairing.
        outcome.issues.append(
            Issue(
                "skipped",
                "size_mismatch",
                mask_path,
                f"mask is {raw_mask.size[0]}x{raw_mask.size[1]} but its image {image_path} is "
                f"{width}x{height}",
                "replace the mask or image with the publisher's matching pair",
            )
        )
        return outcome
    pixels = int(np.count_nonzero(binary))
    rule = f">{THRESHOLD}" if convention == "threshold" else "!= 0"
    if pixels == 0:
        if record.label_from_mask:  # KSDD2 / SPT archive / folder: an empty mask means normal
            outcome.defect_type = NORMAL
            row.update(defect_type=NORMAL, label=NORMAL_LABEL)
            outcome.row = row
            return outcome
        outcome.issues.append(
            Issue(
                "excluded",
                "empty_mask",
                mask_path,
                f"empty mask at {rule} on a defect image ({image_path}); kept out of the defect set",
                "fix the mask if the defect should count",
            )
        )
        return outcome
    if note:
        outcome.issues.append(Issue("repaired", "mask_converted", mask_path, note))
    entry = mask_entry(record.image_id)
    mask = Image.fromarray(binary, mode="L")
    replace_atomically(out_dir / entry, lambda tmp: mask.save(tmp, format="PNG"))
    row.update(mask_path=entry, mask_pixels=pixels, mask_sha256=mask_sha)
    outcome.row = row
    return outcome
