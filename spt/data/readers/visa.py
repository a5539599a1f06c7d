"""VisA: ``<root>/<category>/Data/Images/{Normal,Anomaly}/*.JPG``, masks
``<root>/<category>/Data/Masks/Anomaly/<stem>.png`` and the publisher's split in
``<root>/split_csv/1cls.csv`` (columns ``object,split,label,image,mask``, paths relative to root).

Raw masks hold small class ids, not 0/255; the normaliser binarises them with ``!= 0``.
"""

from __future__ import annotations

import csv
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
ANOMALY = "anomaly"  # VisA names no defect types; every anomalous image gets this one


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
                    result.records.append(
                        ImageRecord(
                            dataset, category_dir.name, defect_type, image_id, path, mask, split
                        )
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
        try:
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                header = tuple(reader.fieldnames or ())
                if not set(CSV_COLUMNS) <= set(header):
                    raise SuiteError(
                        f"{path}: header {','.join(header)!r} lacks columns {','.join(CSV_COLUMNS)}; "
                        "restore the publisher's split_csv/1cls.csv"
                    )
                listed: dict[str, str] = {}
                for row in reader:
                    split = (row["split"] or "").strip().lower()
                    if split not in ("train", "test"):
                        raise SuiteError(
                            f"{path} line {reader.line_num}: split {row['split']!r} is not "
                            "train or test; restore the publisher's split_csv/1cls.csv"
                        )
                    listed[row["image"].strip()] = split
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SuiteError(
                f"{path}: unreadable CSV ({exc}); restore the publisher's split_csv/1cls.csv"
            ) from None
        return listed
