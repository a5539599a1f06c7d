"""BTAD: ``<root>/<01,02,03>/{train/ok, test/{ok,ko}, ground_truth/ko}``.

Products mix formats (01: bmp images / png masks, 02: png / png, 03: bmp / bmp); a mask has its
image's stem, so pairing goes by stem with any image suffix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt.data.readers.base import (
    LayoutReader,
    MasksByStem,
    ScanResult,
    image_files,
    sorted_dirs,
    stray_folder_issue,
)
from spt.data.records import NORMAL, ImageRecord, make_image_id

FOLDERS = (("train", "ok"), ("test", "ok"), ("test", "ko"))
DEFECT = "ko"


class BTADReader(LayoutReader):
    layout = "btad"
    title = "BTAD"
    expected = "<root>/<01,02,03>/{train/ok, test/{ok,ko}, ground_truth/ko}"

    def looks_like(self, root: Path) -> bool:
        return any((cat / "train" / "ok").is_dir() for cat in sorted_dirs(root))

    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        result = ScanResult()
        for category_dir in sorted_dirs(root):
            if not ((category_dir / "train").is_dir() or (category_dir / "test").is_dir()):
                result.issues.append(stray_folder_issue(category_dir, "train/ or test/"))
                continue
            masks = MasksByStem(category_dir / "ground_truth" / DEFECT, ".png or .bmp", result)
            for split, folder in FOLDERS:
                defect_type = DEFECT if folder == DEFECT else NORMAL
                for path in image_files(category_dir / split / folder, result.issues):
                    mask = None
                    if defect_type == DEFECT:
                        mask = masks.mask_for(path, result)
                        if mask is None:
                            continue
                    image_id = make_image_id(dataset, root, path)
                    result.records.append(
                        ImageRecord(
                            dataset, category_dir.name, defect_type, image_id, path, mask, split
                        )
                    )
            masks.report_unused(result)
        return result
