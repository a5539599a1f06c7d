"""The official SPT data archive: ``<root>/<dataset>/{train,test}/*.jpg`` with a same-stem
``.png`` mask beside each image.

The archive names no defect types; an image is a defect image when its mask has foreground.
Its own train/test folders are the split (they hold defect images on both sides).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt.data.readers.base import (
    LayoutReader,
    ScanResult,
    image_files,
    missing_mask_issue,
    orphan_mask_issue,
    sorted_dirs,
)
from spt.data.records import ImageRecord, make_image_id

IMAGE_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"
DEFECT = "defect"


class SPTArchiveReader(LayoutReader):
    layout = "spt_archive"
    title = "SPT data archive"
    expected = "<root>/<dataset>/{train,test}/<stem>.jpg with <stem>.png beside it"

    def looks_like(self, root: Path) -> bool:
        return any(
            any(p.suffix.lower() == IMAGE_SUFFIX for p in image_files(sub / split))
            for sub in sorted_dirs(root)
            for split in ("train", "test")
        )

    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        result = ScanResult()
        for category_dir in sorted_dirs(root):
            for split in ("train", "test"):
                folder = category_dir / split
                files = image_files(folder, result.issues)
                by_stem = {p.stem: p for p in files if p.suffix.lower() == MASK_SUFFIX}
                images = [p for p in files if p.suffix.lower() == IMAGE_SUFFIX]
                for path in images:
                    mask = by_stem.get(path.stem)
                    if mask is None:
                        result.issues.append(missing_mask_issue(path, f"{folder}/{path.stem}.png"))
                        continue
                    result.records.append(
                        ImageRecord(
                            dataset,
                            category_dir.name,
                            DEFECT,
                            make_image_id(dataset, root, path),
                            path,
                            mask,
                            split,
                            label_from_mask=True,
                        )
                    )
                stems = {p.stem for p in images}
                for stem, mask in sorted(by_stem.items()):
                    if stem not in stems:
                        result.issues.append(orphan_mask_issue(mask))
        return result
