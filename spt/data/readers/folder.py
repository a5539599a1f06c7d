"""A user's own line: a folder of images and a folder of masks.

Options (``data.datasets.<name>`` in params.yaml): ``images`` and ``masks`` (folders inside the
root, relative to it unless absolute; defaults ``images`` and ``masks``), ``mask_suffix`` (text between the
image's stem and ``.png`` in a mask's name; default none), ``category`` (default: the dataset
name), ``unannotated`` (what an image without a mask is: ``normal``, the default, or
``exclude``: left out and counted). Sub-folders of ``images`` become categories and are
mirrored under ``masks``. An image with a mask is a defect image when the mask has foreground.
Masks are PNG files: a mask in another format (a ``.mat`` ground truth, a ``.bmp``) is
reported with the conversion to make, never taken as "no mask". Folder links inside ``images``
are not followed (a link to ``.`` would list every image again). There is no publisher split:
the suite's protocol splits every stratum.
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
    stray_file_issue,
    unreadable_entry_issue,
)
from spt.data.records import NORMAL, ImageRecord, make_image_id
from spt.errors import SuiteError

DEFECT = "defect"
UNANNOTATED = ("normal", "exclude")


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
    option_names = ("images", "masks", "mask_suffix", "category", "unannotated")
    option_choices = {"unannotated": UNANNOTATED}

    def looks_like(self, root: Path) -> bool:
        return (root / "images").is_dir()

    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        images_dir = _inside(root, options.get("images", "images"), dataset, "images")
        masks_dir = _inside(root, options.get("masks", "masks"), dataset, "masks")
        suffix = str(options.get("mask_suffix", "") or "")
        default_category = str(options.get("category", dataset))
        unannotated = str(options.get("unannotated", "normal"))  # checked by spt.data.config
        if not images_dir.is_dir():
            raise SuiteError(
                f"{images_dir}: images folder not found; set data.datasets.{dataset}.images "
                "(relative to its root) in params.yaml"
            )
        result = ScanResult()
        used_masks: set[Path] = set()
        for folder in _folders(images_dir, result):
            relative_dir = folder.relative_to(images_dir)
            category = default_category if relative_dir == Path(".") else relative_dir.as_posix()
            listed: list[Issue] = []
            others = _other_masks(masks_dir / relative_dir, suffix)
            for path in image_files(folder, listed):
                mask = masks_dir / relative_dir / f"{path.stem}{suffix}.png"
                # A mask entry that is not a readable file (broken link) still claims the image:
                # inspecting it reports the mask, where calling the image normal would mislabel it.
                has_mask = os.path.lexists(mask)
                if has_mask:
                    used_masks.add(mask)
                elif path.stem in others:
                    other = others[path.stem]
                    used_masks.add(other)
                    result.issues.append(_unsupported_mask_issue(other, mask))
                    continue
                elif unannotated == "exclude":
                    result.issues.append(
                        Issue(
                            "excluded",
                            "unannotated",
                            str(path),
                            f"no mask at {mask}; left out (data.datasets.{dataset}.unannotated: "
                            "exclude)",
                            "add its mask, or set unannotated: normal if it is defect-free",
                        )
                    )
                    continue
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
            for mask in sorted(masks_dir.rglob("*"), key=lambda p: p.as_posix()):
                if mask in used_masks or mask.name.startswith("."):
                    continue
                png = mask.suffix.lower() == ".png"
                if mask.is_dir():  # a category mirror, or a folder named like a mask
                    if png and not (images_dir / mask.relative_to(masks_dir)).is_dir():
                        result.issues.append(unreadable_entry_issue(mask))
                elif not mask.is_file():  # a broken link, a socket
                    result.issues.append(unreadable_entry_issue(mask))
                elif png:
                    result.issues.append(orphan_mask_issue(mask))
                else:
                    result.issues.append(stray_file_issue(mask, str(masks_dir)))
        return result


def _folders(images_dir: Path, result: ScanResult) -> list[Path]:
    """``images_dir`` and every folder below it, by path; folder links are reported, not
    followed (a link to ``.`` or to a parent would list every image again, or loop)."""
    found = [images_dir]
    for folder, names, _ in os.walk(images_dir):  # os.walk does not follow links by default
        names[:] = sorted(n for n in names if not n.startswith("."))  # hidden: not categories
        for name in names:
            path = Path(folder) / name
            if path.is_symlink():
                result.issues.append(
                    Issue(
                        "ignored",
                        "folder_link",
                        str(path),
                        f"link to a folder ({os.readlink(path)}) not followed: it could list "
                        "images twice or loop",
                        "replace the link with the folder itself if its images belong here",
                    )
                )
            else:
                found.append(path)
    return sorted(found, key=lambda p: (p != images_dir, p.as_posix()))


def _other_masks(folder: Path, suffix: str) -> dict[str, Path]:
    """``image stem -> file`` for files in ``folder`` named like a mask of an image but not a
    PNG (``part_001_mask.mat``, ``part_001_mask.bmp``): the image has a mask the suite can not
    read, which is not the same as no mask."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.suffix.lower() == ".png" or path.name.startswith(".") or path.is_dir():
            continue
        stem = path.stem
        if suffix and not stem.endswith(suffix):
            continue
        found.setdefault(stem.removesuffix(suffix) if suffix else stem, path)
    return found


def _unsupported_mask_issue(found: Path, expected: Path) -> Issue:
    if found.suffix.lower() == ".mat":
        fix = (
            f"convert it to a PNG at {expected} (0 = background, 255 = defect; e.g. "
            "scipy.io.loadmat, then the array under the file's ground-truth key)"
        )
        reason = "a MATLAB .mat ground truth is not read (which key holds the mask varies)"
    else:
        fix = f"save it as a PNG at {expected}"
        reason = f"mask is a {found.suffix or 'suffix-less'} file; masks are read as PNG only"
    return Issue("skipped", "unsupported_mask_format", str(found), reason, fix)
