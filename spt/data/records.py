"""What a dataset reader yields: one :class:`ImageRecord` per image file found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spt.errors import SuiteError

NORMAL = "good"  # defect_type of a normal (defect-free) image, as MVTec AD names it
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One image as the publisher ships it, before any file is opened.

    ``split`` is the publisher's split, or None where the publisher gives none (the suite's
    protocol then decides, see :mod:`spt.data.split`). ``label_from_mask`` marks layouts where the
    publisher does not say which images are defective (KSDD2, the SPT archive, a user's folder):
    there an image is a defect image exactly when its normalised mask has foreground.
    """

    dataset: str
    category: str
    defect_type: str
    image_id: str
    image_path: Path
    mask_path: Path | None
    split: str | None
    label_from_mask: bool = False

    @property
    def is_normal(self) -> bool:
        return self.defect_type == NORMAL


def make_image_id(dataset: str, root: Path, image_path: Path) -> str:
    """``<dataset>/<path relative to the root, posix, without extension>`` (see manifest.py).

    Ids name files under the prepared folder (its normalised masks), so an image outside the
    root, whose id would hold ``..``, is refused rather than written outside that folder."""
    try:
        relative = PurePosixPath(image_path.relative_to(root).as_posix())
    except ValueError:
        relative = PurePosixPath("..")
    if ".." in relative.parts:
        raise SuiteError(
            f"{image_path}: outside the dataset root {root}; keep every image and mask folder "
            f"inside the root (data.datasets.{dataset}.root)"
        )
    return f"{dataset}/{relative.with_suffix('')}"
