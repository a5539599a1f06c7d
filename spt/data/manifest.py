"""The prepared-data manifest: the one table every later stage reads.

``spt prepare`` writes one ``manifest.csv`` per dataset under the prepared-data folder
(``work/prepared/<dataset>/manifest.csv`` by default). One row per usable image:

=============  ==========================================================================
image_id       ``<dataset>/<image path relative to the dataset root, no extension>``,
               posix separators; unique across all datasets and stable across machines
dataset        mvtec, visa, mpdd, btad, ksdd2, mtd, spt_archive or a user's folder name
category       product / class (``MT_Crack``, ``bottle``, ``01``...)
defect_type    publisher's defect name; ``good`` for normal images
label          ``defect`` or ``normal``
split          ``train`` or ``test`` (see docs/data.md for the protocol)
image_path     the raw image file (as found under the dataset root: absolute when the
               dataset root is configured absolute, else relative to the directory
               ``spt prepare`` ran in, normally the project root)
mask_path      the normalised mask (one channel, uint8 0/255, same size as the image),
               relative to the manifest's own folder (``masks/<...>.png``); empty for
               normal images
height, width  image size in pixels
mask_pixels    foreground pixels of the normalised mask (0 for normal images)
image_sha256   sha256 of the raw image file
mask_sha256    sha256 of the raw mask file (empty for normal images)
prepared_mask_sha256
               sha256 of the normalised mask file ``mask_path``, which evaluation and
               training check before they use it (empty for normal images)
=============  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from spt.artifacts import replace_atomically
from spt.errors import SuiteError

MASKS_DIR = "masks"  # normalised masks live in <manifest folder>/masks/; such paths are relative
MANIFEST_COLUMNS = [
    "image_id",
    "dataset",
    "category",
    "defect_type",
    "label",
    "split",
    "image_path",
    "mask_path",
    "height",
    "width",
    "mask_pixels",
    "image_sha256",
    "mask_sha256",
    "prepared_mask_sha256",
]
_DTYPES = {
    "image_id": str,
    "dataset": str,
    "category": str,
    "defect_type": str,
    "label": str,
    "split": str,
    "image_path": str,
    "mask_path": str,
    "image_sha256": str,
    "mask_sha256": str,
    "prepared_mask_sha256": str,
    "height": "int64",
    "width": "int64",
    "mask_pixels": "int64",
}


def write_manifest(frame: pd.DataFrame, path: str | Path) -> None:
    """Write atomically (temp file + rename): a kill never leaves a partial manifest."""
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest frame lacks columns {missing}")
    path = Path(path)
    frame = frame[MANIFEST_COLUMNS].sort_values("image_id", kind="stable")

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            frame.to_csv(handle, index=False)

    replace_atomically(path, write)


def mask_entry(image_id: str) -> str:
    """The ``mask_path`` of an image's normalised mask: ``masks/<id without dataset>.png``,
    relative to the manifest's folder, so a prepared folder can be moved or renamed."""
    return f"{MASKS_DIR}/{image_id.split('/', 1)[1]}.png"


def resolve_manifest_path(path_text: str, manifest_dir: Path) -> Path:
    """The file a manifest path names. The rule, for both path columns:

    - an absolute path is used as written;
    - a relative path starting with ``masks/`` (a normalised mask, see :func:`mask_entry`) is
      relative to the manifest's folder ``manifest_dir``, and only there: a moved or renamed
      prepared folder reads its own masks, never a copy left in the working directory;
    - any other relative path (a raw image of a relative dataset root; a mask path of a manifest
      written before masks were stored relative to it) is relative to the working directory,
      which for ``spt``, DVC and the tests is the directory ``spt prepare`` ran in; when it is
      missing there but present next to the manifest, the copy next to the manifest is used.

    A file found nowhere resolves to the path its rule tries first, so the caller's "not found"
    error names a path that was actually tried.
    """
    path = Path(path_text)
    if path.is_absolute():
        return path
    if path.parts[:1] == (MASKS_DIR,):
        return manifest_dir / path
    if not path.exists() and (manifest_dir / path).exists():
        return manifest_dir / path
    return path


def find_manifest(dataset: str, roots: Sequence[str | Path]) -> Path:
    """``<root>/<dataset>/manifest.csv`` in the first of ``roots`` that has it."""
    for root in roots:
        path = Path(root) / dataset / "manifest.csv"
        if path.is_file():
            return path
    raise SuiteError(
        f"dataset {dataset!r}: no manifest under {', '.join(str(r) for r in roots)}; run "
        "`spt prepare` (real data) or `spt prepare --synthetic` (twins), or fix --prepared-root"
    )


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read one manifest, checking its columns; a bad file gives a one-line SuiteError."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(
            f"{path}: manifest not found; run `spt prepare` (or `dvc repro prepare`) first"
        )
    try:
        frame = pd.read_csv(path, dtype=_DTYPES, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise SuiteError(
            f"{path}: unreadable manifest ({exc}); delete it and run `spt prepare` again"
        ) from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise SuiteError(f"{path}: manifest lacks columns {missing}; run `spt prepare` again")
    duplicated = frame["image_id"][frame["image_id"].duplicated()]
    if not duplicated.empty:
        # A repeated row would be scored twice by evaluate and drawn twice as often by train.
        raise SuiteError(
            f"{path}: image id {duplicated.iloc[0]!r} is on more than one row; delete the "
            "duplicate rows or run `spt prepare` again"
        )
    return frame
