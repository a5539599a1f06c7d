"""A user's own line: a folder of images and a folder of masks.

Options (``data.datasets.<name>`` in params.yaml): ``images`` and ``masks`` (folders inside the
root, relative to it unless absolute; defaults ``images`` and ``masks``), ``mask_suffix`` (text between the
image's stem and ``.png`` in a mask's name; default none), ``category`` (default: the dataset
name). Sub-folders of ``images`` become categories and are mirrored under ``masks``. An image
with a mask is a defect image when the mask has foreground; an image without a mask is normal.
There is no publisher split: the suite's protocol splits every stratum.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spt.data.issues import Issue
from spt.data.readers.base import (
    LayoutReader,
    ScanResult,
    image_files,
    orphan_mask_issue,
    unreadable_entry_issue,
)
from spt.data.records import NORMAL, ImageRecord, make_image_id
from spt.errors import SuiteError

DEFECT = "defect"


def _inside(root: Path, option: Any, dataset: str, key: str) -> Path:
    """The folder an option names, which must lie inside the root: image ids are paths relative
    to the root, and the prepared masks are written under those ids."""
    folder = root / str(option)
    # Lexically (a symlinked images folder is fine: its ids stay under the root's name).
    resolved, base = (
        os.path.normpath(os.path.abspath(folder)),
        os.path.normpath(os.path.abspath(root)),
    )
    if os.path.commonpath([resolved, base]) != base:
        raise SuiteError(
            f"data.datasets.{dataset}.{key}: {option!s} is outside the dataset root {root}; "
            "name a folder inside it (or move the root up)"
        )
    return folder


class FolderReader(LayoutReader):
    layout = "folder"
    title = "images folder + masks folder"
    expected = (
        "<root>/<images>/**/*.<png|jpg|bmp|tif> and <root>/<masks>/**/<stem><mask_suffix>.png"
    )
    option_names = ("images", "masks", "mask_suffix", "category")

    def looks_like(self, root: Path) -> bool:
        return (root / "images").is_dir()

    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        images_dir = _inside(root, options.get("images", "images"), dataset, "images")
        masks_dir = _inside(root, options.get("masks", "masks"), dataset, "masks")
        suffix = str(options.get("mask_suffix", "") or "")
        default_category = str(options.get("category", dataset))
        if not images_dir.is_dir():
            raise SuiteError(
                f"{images_dir}: images folder not found; set data.datasets.{dataset}.images "
                "(relative to its root) in params.yaml"
            )
        result = ScanResult()
        used_masks: set[Path] = set()
        folders = [images_dir] + sorted(
            (p for p in images_dir.rglob("*") if p.is_dir()), key=lambda p: p.as_posix()
        )
        for folder in folders:
            relative_dir = folder.relative_to(images_dir)
            category = default_category if relative_dir == Path(".") else relative_dir.as_posix()
            listed: list[Issue] = []
            for path in image_files(folder, listed):
                mask = masks_dir / relative_dir / f"{path.stem}{suffix}.png"
                # A mask entry that is not a readable file (broken link) still claims the image:
                # inspecting it reports the mask, where calling the image normal would mislabel it.
                has_mask = os.path.lexists(mask)
                if has_mask:
                    used_masks.add(mask)
                result.records.append(
                    ImageRecord(
                        dataset,
                        category,
                        DEFECT if has_mask else NORMAL,
                        make_image_id(dataset, root, path),
                        path,
                        mask if has_mask else None,
                        None,
                        label_from_mask=has_mask,
                    )
                )
            # Sub-folders are categories here (scanned above), whatever their name.
            result.issues.extend(i for i in listed if not Path(i.path).is_dir())
        if masks_dir.is_dir():
            for mask in sorted(masks_dir.rglob("*.png"), key=lambda p: p.as_posix()):
                if mask in used_masks:
                    continue
                if mask.is_file():
                    result.issues.append(orphan_mask_issue(mask))
                elif not (images_dir / mask.relative_to(masks_dir)).is_dir():  # not a category
                    result.issues.append(unreadable_entry_issue(mask))
        return result
