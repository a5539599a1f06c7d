"""VisA: ``<root>/<category>/Data/Images/{Normal,Anomaly}/*.JPG``, masks
``<root>/<category>/Data/Masks/Anomaly/<stem>.png`` and the publisher's split in
``<root>/split_csv/1cls.csv`` (columns ``object,split,label,image,mask``, paths relative to root).

Raw masks hold small class ids, not 0/255; the normaliser binarises them with ``!= 0``.
Defect types come from each category's ``<root>/<category>/image_anno.csv`` (columns
``image,label,mask``; ``label`` is ``normal`` or the defect names, comma-separated when an image
has several): names are lower-cased with spaces as ``_`` and several joined by ``+`` in name
order (``"melt, scratch"`` -> ``melt+scratch``). Without that file the type is ``anomaly``,
with a warning.

Licence CC BY 4.0. Citation: Y. Zou, J. Jeong, L. Pemula, D. Zhang, O. Dabeer,
"SPot-the-Difference Self-Supervised Pre-training for Anomaly Detection and Segmentation",
ECCV 2022.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spt.data.issues import Issue
from spt.data.readers.base import (
    LayoutReader,
    MasksByStem,
    ScanResult,
    image_files,
    sorted_dirs,
)
from spt.data.records import NORMAL, ImageRecord, make_image_id
from spt.errors import SuiteError

SPLIT_CSV = Path("split_csv") / "1cls.csv"
CSV_COLUMNS = ("object", "split", "label", "image", "mask")
ANNO_CSV = "image_anno.csv"
ANNO_COLUMNS = ("image", "label")
ANOMALY = "anomaly"  # the defect type when a category's image_anno.csv is missing


def defect_type_of(label: str) -> str:
    """``"melt, scratch"`` -> ``melt+scratch``: each name lower-cased, runs of spaces as one
    ``_``, several names joined by ``+`` in sorted order (so the order written does not matter)."""
    names = {re.sub(r"\s+", "_", part.strip().lower()) for part in label.split(",")}
    return "+".join(sorted(n for n in names if n)) or ANOMALY


class VisAReader(LayoutReader):
    layout = "visa"
    title = "VisA"
    expected = (
        "<root>/<category>/Data/{Images/{Normal,Anomaly}, Masks/Anomaly} + split_csv/1cls.csv"
    )

    def looks_like(self, root: Path) -> bool:
        return (root / SPLIT_CSV).is_file() or any(
            (cat / "Data" / "Images").is_dir() for cat in sorted_dirs(root)
        )

    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        result = ScanResult()
        listed = self._read_split_csv(root / SPLIT_CSV, result)
        seen: set[str] = set()
        for category_dir in sorted_dirs(root):
            images_dir = category_dir / "Data" / "Images"
            if not images_dir.is_dir():
                continue
            masks = MasksByStem(category_dir / "Data" / "Masks" / "Anomaly", ".png", result)
            labels = self._read_image_anno(category_dir / ANNO_CSV, result)
            for folder, defect_type in (("Normal", NORMAL), ("Anomaly", ANOMALY)):
                for path in image_files(images_dir / folder, result.issues):
                    relative = path.relative_to(root).as_posix()
                    if listed is not None and relative not in listed:
                        result.issues.append(
                            Issue(
                                "ignored",
                                "not_in_split_csv",
                                str(path),
                                f"image not listed in {SPLIT_CSV.as_posix()}",
                                "restore the publisher's split_csv/1cls.csv",
                            )
                        )
                        continue
                    seen.add(relative)
                    split = listed[relative] if listed is not None else None
                    mask = None
                    if defect_type != NORMAL:
                        mask = masks.mask_for(path, result)
                        if mask is None:
                            continue
                    image_id = make_image_id(dataset, root, path)
                    kind = defect_type
                    if defect_type != NORMAL and labels is not None:
                        kind = self._labelled_type(path, relative, labels, result)
                    result.records.append(
                        ImageRecord(dataset, category_dir.name, kind, image_id, path, mask, split)
                    )
            masks.report_unused(result)
        for relative in sorted(set(listed or ()) - seen):
            result.issues.append(
                Issue(
                    "skipped",
                    "missing_image",
                    str(root / relative),
                    f"listed in {SPLIT_CSV.as_posix()} but not found",
                    "restore the image from the VisA archive",
                )
            )
        return result

    def _labelled_type(
        self, path: Path, relative: str, labels: dict[str, str], result: ScanResult
    ) -> str:
        label = labels.get(relative)
        if label is None or label.strip().lower() == "normal":
            said = "not listed" if label is None else "labelled normal"
            result.issues.append(
                Issue(
                    "warning",
                    "unlabelled_anomaly",
                    str(path),
                    f"anomaly image {said} in {path.parents[3].name}/{ANNO_CSV}; defect type "
                    f"{ANOMALY!r}",
                    f"restore the publisher's {ANNO_CSV}",
                )
            )
            return ANOMALY
        return defect_type_of(label)

    def _read_image_anno(self, path: Path, result: ScanResult) -> dict[str, str] | None:
        """``image path -> label`` from a category's image_anno.csv, or None (with a warning)."""
        if not path.is_file():
            result.issues.append(
                Issue(
                    "warning",
                    "missing_image_anno",
                    str(path),
                    f"defect labels not found; this category's anomalies get type {ANOMALY!r}",
                    f"restore {path.parent.name}/{ANNO_CSV} from the VisA archive",
                )
            )
            return None
        result.accounted.append(path)
        fix = f"restore the publisher's {path.parent.name}/{ANNO_CSV}"
        return {
            (row["image"] or "").strip(): row["label"] or ""
            for _, row in _csv_rows(path, ANNO_COLUMNS, fix)
            if row["image"]
        }

    def _read_split_csv(self, path: Path, result: ScanResult) -> dict[str, str] | None:
        """``image path -> split`` from 1cls.csv, or None (with a report entry) when absent."""
        if not path.is_file():
            result.issues.append(
                Issue(
                    "warning",
                    "missing_split_csv",
                    str(path),
                    "publisher's split file not found; normal images are split by the suite's protocol",
                    "restore split_csv/1cls.csv from the VisA archive",
                )
            )
            return None
        result.accounted.append(path)
        fix = "restore the publisher's split_csv/1cls.csv"
        listed: dict[str, str] = {}
        for line, row in _csv_rows(path, CSV_COLUMNS, fix):
            split = (row["split"] or "").strip().lower()
            if split not in ("train", "test"):
                raise SuiteError(
                    f"{path} line {line}: split {row['split']!r} is not train or test; {fix}"
                )
            listed[row["image"].strip()] = split
        return listed


def _csv_rows(path: Path, columns: tuple[str, ...], fix: str) -> Iterator[tuple[int, dict]]:
    """``(line number, row)`` of a publisher's CSV whose header must hold ``columns``; a
    missing column or an undecodable file is one SuiteError ending in ``fix``."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = tuple(reader.fieldnames or ())
            if not set(columns) <= set(header):
                raise SuiteError(
                    f"{path}: header {','.join(header)!r} lacks columns {','.join(columns)}; {fix}"
                )
            for row in reader:
                yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SuiteError(f"{path}: unreadable CSV ({exc}); {fix}") from None
