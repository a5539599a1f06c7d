"""Per-image work of the prepare step: hash, decode, check and normalise one record.

A pure function of the record and its files, so it can run in any worker process in any order.
Every failure becomes an :class:`Issue` in the outcome; nothing here raises for bad data.
Images and masks are decoded under the one rule of :mod:`spt.data.images`, which training and
evaluation apply again when they read them.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from spt.artifacts import replace_atomically
from spt.data.images import ImageFormatError, open_checked, rgb8
from spt.data.issues import Issue
from spt.data.manifest import mask_entry
from spt.data.masks import MaskFormatError, normalise_mask, raw_summary, rule_text
from spt.data.records import NORMAL, ImageRecord

DEFECT_LABEL = "defect"
NORMAL_LABEL = "normal"
FULL_COVERAGE = 0.99  # a mask this much of its image is more likely an inverted convention
# Reading the path failed, not decoding it: a broken link or a folder where a mask should be.
_NOT_A_FILE = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


@dataclass
class Outcome:
    """What became of one record: a manifest row (or None) and the report entries it earned."""

    record: ImageRecord
    row: dict | None
    issues: list[Issue] = field(default_factory=list)
    defect_type: str = ""  # final defect type (label_from_mask records get it from the mask)


def _read(path: Path) -> tuple[bytes, str]:
    # A FIFO or a device would block the read (or never end): only regular files are read.
    if path.exists() and not path.is_file():
        raise OSError(f"{path} is not a regular file (a pipe or a device?)")
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def _refused(kind: str, path: str, exc: ImageFormatError, what: str) -> Issue:
    return Issue("skipped", kind, path, f"{what} refused: {exc}")


def inspect_record(
    record: ImageRecord, convention: str, out_dir: Path, min_defect_pixels: int = 1
) -> Outcome:
    """Check one record; write its normalised mask under ``out_dir`` (the manifest's folder) when
    it is a defect image. The row names the mask relative to ``out_dir`` (``masks/...``).
    A defect mask with fewer than ``min_defect_pixels`` foreground pixels is excluded."""
    outcome = Outcome(record, None, defect_type=record.defect_type)
    image_path = str(record.image_path)
    try:
        image_bytes, image_sha = _read(record.image_path)
        with open_checked(io.BytesIO(image_bytes)) as image:
            _, image_note = rgb8(image)  # the pixels training and evaluation will see
            width, height = image.size
    except ImageFormatError as exc:
        outcome.issues.append(_refused("refused_image", image_path, exc, "image"))
        return outcome
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
    if image_note:
        outcome.issues.append(Issue("repaired", "image_converted", image_path, image_note))
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
        "prepared_mask_sha256": "",
    }
    if record.mask_path is None:
        outcome.row = row
        return outcome

    mask_path = str(record.mask_path)
    try:
        mask_bytes, mask_sha = _read(record.mask_path)
        with open_checked(io.BytesIO(mask_bytes)) as raw_mask:
            binary, note = normalise_mask(raw_mask, convention)
            raw_size = raw_mask.size
            raw_nonzero, raw_max = raw_summary(raw_mask)
    except ImageFormatError as exc:
        outcome.issues.append(_refused("refused_mask", mask_path, exc, "mask"))
        return outcome
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
    if raw_size != (width, height):
        # Resizing would guess an alignment; a mismatched pair is more likely a wrong pairing.
        outcome.issues.append(
            Issue(
                "skipped",
                "size_mismatch",
                mask_path,
                f"mask is {raw_size[0]}x{raw_size[1]} but its image {image_path} is "
                f"{width}x{height}",
                "replace the mask or image with the publisher's matching pair",
            )
        )
        return outcome
    pixels = int(np.count_nonzero(binary))
    rule = rule_text(convention)
    if pixels == 0 and raw_nonzero > 0:
        # Stored values that the rule reads as background: {0,1} or class-id masks, 16-bit
        # masks with small values, faint annotations. Calling the image normal would misread it.
        outcome.issues.append(
            Issue(
                "excluded",
                "mask_below_threshold",
                mask_path,
                f"{raw_nonzero} pixels are non-zero (largest value {raw_max}) but none is "
                f"foreground at {rule}; kept out of the defect and normal sets",
                "if the values are class ids or 0/1, set mask_convention: nonzero for this "
                "dataset; if the annotation is faint, redraw it",
            )
        )
        return outcome
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
    if pixels < min_defect_pixels:
        outcome.issues.append(
            Issue(
                "excluded",
                "tiny_defect",
                mask_path,
                f"{pixels} foreground pixel(s) at {rule}, under data.min_defect_pixels "
                f"({min_defect_pixels}); kept out of the defect set",
                "lower data.min_defect_pixels if such defects should count",
            )
        )
        return outcome
    if note:
        outcome.issues.append(Issue("repaired", "mask_converted", mask_path, note))
    if pixels >= FULL_COVERAGE * width * height:
        outcome.issues.append(
            Issue(
                "warning",
                "mask_covers_image",
                mask_path,
                f"mask covers {100 * pixels / (width * height):.1f}% of its image at {rule}",
                "if the background is stored as 1 (or 255), the mask is inverted or in another "
                "convention: fix the masks or set mask_convention",
            )
        )
    entry = mask_entry(record.image_id)
    buffer = io.BytesIO()
    Image.fromarray(binary, mode="L").save(buffer, format="PNG")
    encoded = buffer.getvalue()
    replace_atomically(out_dir / entry, lambda tmp: Path(tmp).write_bytes(encoded))
    row.update(
        mask_path=entry,
        mask_pixels=pixels,
        mask_sha256=mask_sha,
        prepared_mask_sha256=hashlib.sha256(encoded).hexdigest(),
    )
    outcome.row = row
    return outcome
