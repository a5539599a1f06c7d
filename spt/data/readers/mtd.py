"""MTD (magnetic tile): ``<root>/MT_<class>/Imgs/<stem>.jpg`` with ``<stem>.png`` beside it.

``MT_Free`` holds the normal images; the other classes (Blowhole, Break, Crack, Fray, Uneven)
are both the category and the defect type. Masks are not strictly binary (threshold > 128).
The publisher gives no split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt.data.issues import Issue
from spt.data.readers.base import (
    LayoutReader,
    ScanResult,
    image_files,
    missing_mask_issue,
    orphan_mask_issue,
    sorted_dirs,
    stray_file_issue,
)
from spt.data.records import NORMAL, ImageRecord, make_image_id

PREFIX = "MT_"
NORMAL_CLASS = "MT_Free"
IMAGE_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"


class MTDReader(LayoutReader):
    layout = "mtd"
    title = "MTD (magnetic tile)"
    expected = "<root>/MT_<class>/Imgs/<stem>.jpg with <stem>.png beside it"

    def looks_like(self, root: Path) -> bool:
        return any(
            cat.name.startswith(PREFIX) and (cat / "Imgs").is_dir() for cat in sorted_dirs(root)
        )

    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        result = ScanResult()
        for class_dir in sorted_dirs(root):
            folder = class_dir / "Imgs"
            if not (class_dir.name.startswith(PREFIX) and folder.is_dir()):
                continue
            normal = class_dir.name == NORMAL_CLASS
            defect_type = NORMAL if normal else class_dir.name.removeprefix(PREFIX).lower()
            files = image_files(folder, result.issues)
            by_name = {p.name.lower(): p for p in files}
            image_stems = set()
            for path in files:
                suffix = path.suffix.lower()
                if suffix == MASK_SUFFIX:
                    continue
                if suffix != IMAGE_SUFFIX:
                    result.issues.append(stray_file_issue(path, str(folder)))
                    continue
                image_stems.add(path.stem)
                mask = by_name.get((path.stem + MASK_SUFFIX).lower())
                # MT_Free masks are all background; normal images carry no mask in the manifest.
                if normal:
                    mask = None
                elif mask is None:
                    result.issues.append(missing_mask_issue(path, f"{folder}/{path.stem}.png"))
                    continue
                image_id = make_image_id(dataset, root, path)
                result.records.append(
                    ImageRecord(dataset, class_dir.name, defect_type, image_id, path, mask, None)
                )
            normal_masks = []
            for path in files:
                if path.suffix.lower() == MASK_SUFFIX and path.stem not in image_stems:
                    result.issues.append(orphan_mask_issue(path))
                elif normal and path.suffix.lower() == MASK_SUFFIX:
                    normal_masks.append(path)
            if normal_masks:
                result.accounted.extend(normal_masks)
                result.issues.append(
                    Issue(
                        "ignored",
                        "normal_masks",
                        str(folder),
                        f"{len(normal_masks)} masks of normal images not read (MTD ships an "
                        "all-background mask beside each MT_Free image)",
                    )
                )
        return result
