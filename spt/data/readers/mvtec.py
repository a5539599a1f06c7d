"""MVTec AD and MPDD (same layout).

``<root>/<category>/train/good/*.png``, ``<root>/<category>/test/<defect or good>/*.png`` and
masks ``<root>/<category>/ground_truth/<defect>/<stem>_mask.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt.data.readers.base import (
    LayoutReader,
    ScanResult,
    image_files,
    is_image_file,
    missing_mask_issue,
    orphan_mask_issue,
    sorted_dirs,
    sorted_files,
    stem_index,
    stray_file_issue,
    stray_folder_issue,
)
from spt.data.records import NORMAL, ImageRecord, make_image_id

MASK_SUFFIX = "_mask"


class MVTecReader(LayoutReader):
    layout = "mvtec"
    title = "MVTec AD"
    expected = "<root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/*_mask.png}"

    def looks_like(self, root: Path) -> bool:
        return any(
            (cat / "train" / "good").is_dir() or (cat / "test" / "good").is_dir()
            for cat in sorted_dirs(root)
        )

    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        result = ScanResult()
        for category_dir in sorted_dirs(root):
            if not ((category_dir / "train").is_dir() or (category_dir / "test").is_dir()):
                result.issues.append(stray_folder_issue(category_dir, "train/ or test/"))
                continue
            for split in ("train", "test"):
                for type_dir in sorted_dirs(category_dir / split):
                    self._scan_type_dir(dataset, root, category_dir, split, type_dir, result)
            self._report_orphan_masks(category_dir, result)
        return result

    def _scan_type_dir(
        self,
        dataset: str,
        root: Path,
        category_dir: Path,
        split: str,
        type_dir: Path,
        result: ScanResult,
    ) -> None:
        defect_type = type_dir.name
        mask_dir = category_dir / "ground_truth" / defect_type
        masks = stem_index(mask_dir) if defect_type != NORMAL else {}
        for path in sorted_files(type_dir, result.issues):
            if not is_image_file(path):
                result.issues.append(stray_file_issue(path, str(type_dir)))
                continue
            image_id = make_image_id(dataset, root, path)
            if defect_type == NORMAL:
                record = ImageRecord(
                    dataset, category_dir.name, NORMAL, image_id, path, None, split
                )
                result.records.append(record)
                continue
            mask = masks.get(path.stem + MASK_SUFFIX)
            if mask is None:
                result.issues.append(
                    missing_mask_issue(path, f"{mask_dir}/{path.stem}{MASK_SUFFIX}.png")
                )
                continue
            # Publishers put every defect image in test; the suite's protocol splits them.
            result.records.append(
                ImageRecord(dataset, category_dir.name, defect_type, image_id, path, mask, split)
            )

    def _report_orphan_masks(self, category_dir: Path, result: ScanResult) -> None:
        for mask_dir in sorted_dirs(category_dir / "ground_truth"):
            images = stem_index(category_dir / "test" / mask_dir.name)
            for mask in image_files(mask_dir, result.issues):
                stem = mask.stem.removesuffix(MASK_SUFFIX)
                if mask.stem == stem or stem not in images:
                    result.issues.append(orphan_mask_issue(mask))


class MPDDReader(MVTecReader):
    layout = "mpdd"
    title = "MPDD"
