"""MVTec AD and MPDD (same layout).

``<root>/<category>/train/good/*.png``, ``<root>/<category>/test/<defect or good>/*.png`` and
masks ``<root>/<category>/ground_truth/<defect>/<stem>_mask.png``.

An MVTec AD 2 root also has ``<category>/train/good`` but keeps its test images in
``test_public/`` and ``test_private*/``: read as MVTec AD it would yield normal images and no
defect image, so :meth:`MVTecReader.scan` refuses it and names the ``mvtec_ad2`` layout.
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
from spt.errors import SuiteError

MASK_SUFFIX = "_mask"
AD2_PUBLIC = "test_public"
AD2_PRIVATE_PREFIX = "test_private"  # test_private/, test_private_mixed/


def mvtec_ad2_folder(category_dir: Path) -> str | None:
    """A folder of ``category_dir`` that only MVTec AD 2 ships: ``test_public`` when there,
    else the first ``test_private*``; None when there is neither."""
    if (category_dir / AD2_PUBLIC).is_dir():
        return AD2_PUBLIC
    private = [d.name for d in sorted_dirs(category_dir) if d.name.startswith(AD2_PRIVATE_PREFIX)]
    return private[0] if private else None


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
        self._refuse_mvtec_ad2(dataset, root)
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

    def superseded_by(self, root: Path) -> str | None:
        return "mvtec_ad2" if self._mvtec_ad2_evidence(root) else None

    def _mvtec_ad2_evidence(self, root: Path) -> str | None:
        """``<category>/<folder>`` of the first category holding a folder only MVTec AD 2 ships."""
        for category_dir in sorted_dirs(root):
            folder = mvtec_ad2_folder(category_dir)
            if folder is not None:
                return f"{category_dir.name}/{folder}"
        return None

    def _refuse_mvtec_ad2(self, dataset: str, root: Path) -> None:
        """An MVTec AD 2 root read as this layout would lose every defect image without a
        word (they are under test_public/, not test/): stop and name the right layout."""
        evidence = self._mvtec_ad2_evidence(root)
        if evidence is not None:
            raise SuiteError(
                f"{root}: this is an MVTec AD 2 root ({evidence}); "
                f"set layout: mvtec_ad2 for data.datasets.{dataset}"
            )

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
