"""The one interface every native-layout reader implements, and the helpers they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.data.issues import Issue
from spt.data.records import ImageRecord

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class ScanResult:
    """What a reader found under a root: records, plus files it could not pair or place."""

    records: list[ImageRecord] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    # Files the reader read besides images and masks (split or label tables), or set aside on
    # purpose and reported itself: the prepare report lists every other file as not read.
    accounted: list[Path] = field(default_factory=list)


class LayoutReader(ABC):
    """Turns one dataset root in one publisher's layout into :class:`ImageRecord` s.

    Readers only list and pair files (nothing is decoded here), so a scan is cheap; decoding,
    hashing and mask checks happen later, once per record, in :mod:`spt.data.inspect`.
    """

    layout: str  # registry key, also the value of ``layout:`` in params.yaml
    title: str  # the dataset's name as its publisher writes it
    expected: str  # the layout in one line, for error messages
    option_names: tuple[str, ...] = ()
    option_choices: dict[str, tuple[str, ...]] = {}  # options that take one of a few words

    @abstractmethod
    def looks_like(self, root: Path) -> bool:
        """Cheap signature check: does ``root`` hold this layout (used to catch wrong roots)?"""

    @abstractmethod
    def scan(self, dataset: str, root: Path, options: dict[str, Any]) -> ScanResult:
        """List every image under ``root`` as a record, in a file-system-independent order."""

    def superseded_by(self, root: Path) -> str | None:
        """The layout ``root`` really holds when it also passes this reader's cheap signature
        (an MVTec AD 2 root has MVTec AD's ``train/good``), else None. :meth:`scan` refuses such
        a root with a pointer to that layout, and wrong-root hints name only that layout."""
        return None


def sorted_dirs(folder: Path) -> list[Path]:
    """Sub-folders by name: never rely on the file system's listing order."""
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def sorted_files(folder: Path, issues: list[Issue] | None = None) -> list[Path]:
    """Regular files by name (hidden ones left out). An entry that can not be read as a file (a
    broken or looping link, a socket) or a folder named like an image (``x.png/``) is reported
    to ``issues`` when given: nothing in a folder the layout reads is dropped silently. Pass
    ``issues`` on one listing per folder only, so each entry is reported once."""
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith("."):
            continue
        if path.is_file():
            files.append(path)
        elif issues is not None and (not path.is_dir() or is_image_file(path)):
            issues.append(unreadable_entry_issue(path))
    return files


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path, issues: list[Issue] | None = None) -> list[Path]:
    return [p for p in sorted_files(folder, issues) if is_image_file(p)]


def unreadable_entry_issue(path: Path) -> Issue:
    if path.is_symlink() and not path.exists():
        reason, fix = "broken or looping link", "point the link at an existing file or delete it"
    elif path.is_dir():
        reason, fix = "a folder named like an image file", "rename it or replace it with the file"
    else:
        reason, fix = "not a regular file", "replace it with the file itself"
    return Issue("skipped", "unreadable_entry", str(path), reason, fix)


def stem_index(
    folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES, issues: list[Issue] | None = None
) -> dict[str, Path]:
    """``stem -> file`` for the files of ``folder`` with one of ``suffixes`` (any letter case).

    Built once per folder so pairing images with masks stays linear. Stems are compared whole
    (``Path.stem``), never by stripping characters off a name (``str.rstrip(".png")`` turns
    ``pong.png`` into ``po``). When two files share a stem, the earlier suffix in ``suffixes``
    wins; the duplicate-id check reports such pairs among images. ``issues``: as in
    :func:`sorted_files`.
    """
    order = {s.lower(): i for i, s in enumerate(suffixes)}
    index: dict[str, Path] = {}
    for path in sorted_files(folder, issues):
        rank = order.get(path.suffix.lower())
        if rank is None:
            continue
        held = index.get(path.stem)
        if held is None or rank < order[held.suffix.lower()]:
            index[path.stem] = path
    return index


def missing_mask_issue(image: Path, expected: str) -> Issue:
    return Issue(
        "skipped",
        "missing_mask",
        str(image),
        f"defect image has no mask (expected {expected})",
        "restore the mask from the publisher's archive",
    )


def orphan_mask_issue(mask: Path) -> Issue:
    return Issue(
        "ignored",
        "orphan_mask",
        str(mask),
        "mask without a matching image",
        "restore the image or delete the mask",
    )


class MasksByStem:
    """The masks of one folder, paired with defect images by stem (BTAD, VisA).

    :meth:`mask_for` answers an image's mask, or reports it missing; :meth:`report_unused` then
    reports every mask that no image claimed.
    """

    def __init__(self, folder: Path, expected_suffixes: str, result: ScanResult) -> None:
        self.folder = folder
        self.expected_suffixes = expected_suffixes  # for the message, e.g. ".png or .bmp"
        self.masks = stem_index(folder, issues=result.issues)
        self.used: set[str] = set()

    def mask_for(self, image: Path, result: ScanResult) -> Path | None:
        mask = self.masks.get(image.stem)
        if mask is None:
            expected = f"{self.folder}/{image.stem}{self.expected_suffixes}"
            result.issues.append(missing_mask_issue(image, expected))
            return None
        self.used.add(image.stem)
        return mask

    def report_unused(self, result: ScanResult) -> None:
        for stem, mask in sorted(self.masks.items()):
            if stem not in self.used:
                result.issues.append(orphan_mask_issue(mask))


def unread_folder_issue(path: Path, reason: str) -> Issue:
    """A folder under the root that the layout does not read, and why."""
    return Issue(
        "ignored",
        "stray_folder",
        str(path),
        reason,
        "move it out of the dataset root if it holds images",
    )


def stray_folder_issue(path: Path, expected: str) -> Issue:
    return unread_folder_issue(path, f"folder is not a category (expected {expected} inside)")


def stray_file_issue(path: Path, where: str) -> Issue:
    return Issue(
        "ignored", "stray_file", str(path), f"not an image file in {where}", "move it elsewhere"
    )
