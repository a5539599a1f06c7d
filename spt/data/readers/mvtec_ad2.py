"""MVTec AD 2: ``<root>/<object>/`` for 8 objects (can, fabric, fruit_jelly, rice, sheet_metal,
vial, wallplugs, walnuts), each with

- ``train/good/*.png`` and ``validation/good/*.png``: normal images only,
- ``test_public/{good,bad}/*.png`` with masks ``test_public/ground_truth/bad/<stem>_mask.png``
  (0/255): the only labelled test set,
- ``test_private/*.png`` and ``test_private_mixed/*.png``: test sets whose ground truth MVTec
  keeps private (scored on MVTec's evaluation server only).

Read: ``train/good`` and ``validation/good`` as normal images of the publisher's ``train`` side
(MVTec meant validation for tuning thresholds on normal images, so it is never scored);
``test_public/good`` as normal ``test`` images; ``test_public/bad`` as defect images of defect
type ``bad`` (the public test set names no defect types) with no publisher split, so the suite's
protocol splits them as it splits MVTec AD's (:mod:`spt.data.split`). Not read: the
``test_private*`` folders, reported once each with their image count, since without ground truth
an image can not be scored or trained on. Images are counted directly in those folders or in
sub-folders of them, so a differently unpacked archive is still reported rather than missed.

File names (``000_regular.png``, ``005_regular_mask.png``) and the folders above follow MVTec's
own loader in the dataset's code utils (``mvtec_ad_2_public_offline.py``: private images lie
directly in ``test_private*/``, masks are ``test_public/ground_truth/bad/<stem>_mask.png``);
masks are paired by whole stems, so no particular image name is assumed.

Licence: CC BY-NC-SA 4.0 (MVTec Software GmbH). Cite: L. Heckler-Kram, J.-H. Neudeck,
U. Scheler, R. König, C. Steger, "The MVTec AD 2 Dataset: Advanced Scenarios for Unsupervised
Anomaly Detection", arXiv 2503.21622, 2025.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt.data.issues import Issue
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
    unread_folder_issue,
)
from spt.data.readers.mvtec import AD2_PRIVATE_PREFIX, AD2_PUBLIC, MASK_SUFFIX, mvtec_ad2_folder
from spt.data.records import NORMAL, ImageRecord, make_image_id

PUBLIC = AD2_PUBLIC  # test_public/
PRIVATE_PREFIX = AD2_PRIVATE_PREFIX  # test_private/, test_private_mixed/
DEFECT = "bad"  # the public test set names no defect types
# (folder under the object, publisher split): the normal images read. validation/ is train-side:
# MVTec meant it for tuning on normal images, never for scoring.
NORMAL_FOLDERS = (("train", "train"), ("validation", "train"), (PUBLIC, "test"))
READ_FOLDERS = ("train", "validation", PUBLIC)


class MVTecAD2Reader(LayoutReader):
    layout = "mvtec_ad2"
    title = "MVTec AD 2"
    expected = (
        "<root>/<object>/{train/good, validation/good, test_public/{good,bad}, "
        "test_public/ground_truth/bad/*_mask.png}"
    )

    def looks_like(self, root: Path) -> bool:
        # Specific on purpose: train/good alone is MVTec AD's signature too.
        return any(
            mvtec_ad2_folder(cat) is not None or (cat / "validation" / NORMAL).is_dir()
            for cat in sorted_dirs(root)
        )

    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        result = ScanResult()
        for object_dir in sorted_dirs(root):
            if not any((object_dir / name).is_dir() for name in READ_FOLDERS):
                result.issues.append(
                    stray_folder_issue(object_dir, "train/, validation/ or test_public/")
                )
                continue
            self._scan_object(dataset, root, object_dir, result)
        return result

    def _scan_object(self, dataset: str, root: Path, object_dir: Path, result: ScanResult) -> None:
        """The normal images of the three folders read, the public defect images, then every
        folder of the object that is not read."""
        for folder, split in NORMAL_FOLDERS:
            for path in self._images(object_dir / folder / NORMAL, result):
                image_id = make_image_id(dataset, root, path)
                result.records.append(
                    ImageRecord(dataset, object_dir.name, NORMAL, image_id, path, None, split)
                )
        self._scan_defects(dataset, root, object_dir, result)
        self._report_unread_folders(object_dir, result)

    def _report_unread_folders(self, object_dir: Path, result: ScanResult) -> None:
        """``test_private*`` once each (unlabelled), and every other folder not read."""
        for child in sorted_dirs(object_dir):
            if child.name.startswith(PRIVATE_PREFIX):
                result.issues.append(unlabelled_test_issue(child))
            elif child.name not in READ_FOLDERS:
                result.issues.append(_unread_folder(child, object_dir))
        for parent, known in (
            (object_dir / "train", (NORMAL,)),
            (object_dir / "validation", (NORMAL,)),
            (object_dir / PUBLIC, (NORMAL, DEFECT, "ground_truth")),
            (object_dir / PUBLIC / "ground_truth", (DEFECT,)),
        ):
            for child in sorted_dirs(parent):
                if child.name not in known:
                    result.issues.append(_unread_folder(child, parent))

    def _scan_defects(self, dataset: str, root: Path, object_dir: Path, result: ScanResult) -> None:
        """``test_public/bad`` images paired by stem with ``ground_truth/bad/<stem>_mask.png``;
        then every mask no image claimed is reported."""
        image_dir = object_dir / PUBLIC / DEFECT
        mask_dir = object_dir / PUBLIC / "ground_truth" / DEFECT
        masks = stem_index(mask_dir)
        used: set[str] = set()
        for path in self._images(image_dir, result):
            mask = masks.get(path.stem + MASK_SUFFIX)
            if mask is None:
                expected = f"{mask_dir}/{path.stem}{MASK_SUFFIX}.png"
                result.issues.append(missing_mask_issue(path, expected))
                continue
            used.add(mask.stem)
            image_id = make_image_id(dataset, root, path)
            # No publisher split: the suite's protocol puts these on both sides.
            result.records.append(
                ImageRecord(dataset, object_dir.name, DEFECT, image_id, path, mask, None)
            )
        for mask in image_files(mask_dir, result.issues):
            if mask.stem not in used or mask != masks.get(mask.stem):
                result.issues.append(orphan_mask_issue(mask))

    def _images(self, folder: Path, result: ScanResult) -> list[Path]:
        """The images of one folder the layout reads; any other file there is reported."""
        images = []
        for path in sorted_files(folder, result.issues):
            if is_image_file(path):
                images.append(path)
            else:
                result.issues.append(stray_file_issue(path, str(folder)))
        return images


def unlabelled_test_issue(folder: Path) -> Issue:
    count = sum(
        1
        for path in folder.rglob("*")
        if path.is_file() and is_image_file(path) and not path.name.startswith(".")
    )
    return Issue(
        "ignored",
        "unlabelled_test",
        str(folder),
        f"{count} test image(s) whose ground truth MVTec keeps private: not read, never scored",
        "to score a method on them, submit its anomaly maps to MVTec's evaluation server",
    )


def _unread_folder(folder: Path, parent: Path) -> Issue:
    return unread_folder_issue(folder, f"folder the MVTec AD 2 layout does not read in {parent}")
