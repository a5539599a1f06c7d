"""KSDD2: ``<root>/{train,test}/<id>.png`` with ``<id>_GT.png`` beside each image.

Normal and defective images share one folder; an image is defective when its mask has
foreground. The publisher's split holds defect images on both sides and is kept.
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
)
from spt.data.records import ImageRecord, make_image_id

MASK_SUFFIX = "_GT"
CATEGORY = "ksdd2"  # one product (electrical commutators); the dataset has no categories
DEFECT = "defect"


class KSDD2Reader(LayoutReader):
    layout = "ksdd2"
    title = "KSDD2"
    expected = "<root>/{train,test}/<id>.png with <id>_GT.png beside it"

    def looks_like(self, root: Path) -> bool:
        return any(
            p.stem.endswith(MASK_SUFFIX)
            for split in ("train", "test")
            for p in image_files(root / split)
        )

    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        result = ScanResult()
        for split in ("train", "test"):
            folder = root / split
            files = image_files(folder, result.issues)
            by_name = {p.name: p for p in files}
            for path in files:
                if path.stem.endswith(MASK_SUFFIX):
                    continue
                mask = by_name.get(f"{path.stem}{MASK_SUFFIX}{path.suffix}") or by_name.get(
                    f"{path.stem}{MASK_SUFFIX}.png"
                )
                if mask is None:
                    result.issues.append(
                        missing_mask_issue(path, f"{folder}/{path.stem}{MASK_SUFFIX}.png")
                    )
                    continue
                image_id = make_image_id(dataset, root, path)
                result.records.append(
                    ImageRecord(
                        dataset, CATEGORY, DEFECT, image_id, path, mask, split, label_from_mask=True
                    )
                )
            stems = {p.stem for p in files}
            for path in files:
                if path.stem.endswith(MASK_SUFFIX):
                    if path.stem.removesuffix(MASK_SUFFIX) not in stems:
                        result.issues.append(orphan_mask_issue(path))
        return result
