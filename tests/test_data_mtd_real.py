"""The real MTD copy in ../shared: counts, the 4 empty MT_Uneven masks, and the time budget."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spt.data.config import parse_data_config
from spt.data.manifest import read_manifest, resolve_manifest_path
from spt.data.prepare import prepare_all
from spt.data.split import train_count

SHARED = Path(__file__).resolve().parents[2] / "shared"
MTD = SHARED / "datasets" / "mtd"
TIME_BUDGET_S = 60.0  # the issue's limit for 1,344 images on 2 cores


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not MTD.is_dir():
        pytest.skip(f"{MTD} is absent (the real MTD copy ships only with the project's machines)")
    out = tmp_path_factory.mktemp("prepared")
    config = parse_data_config({"datasets": {"mtd": {"layout": "mtd", "root": str(MTD)}}})
    start = time.perf_counter()
    (report,) = prepare_all(config, out_root=out, workers=2)
    return report, out, time.perf_counter() - start


def _uneven_masks(low: int, high: int) -> set[str]:
    """Computed here, independently of the suite: MT_Uneven masks with at least ``low`` and
    fewer than ``high`` pixels above 128."""
    found = set()
    for path in sorted((MTD / "MT_Uneven" / "Imgs").glob("*.png")):
        above = int((np.asarray(Image.open(path).convert("L")) > 128).sum())
        if low <= above < high:
            found.add(str(path))
    return found


MIN_PIXELS = 10  # data.min_defect_pixels' default


def test_counts_match_the_publication(prepared):
    report, out, _ = prepared
    totals = report.totals()
    assert report.status == "prepared"
    assert totals["found_defect"] == 392 and totals["found_normal"] == 952
    manifest = read_manifest(out / "mtd" / "manifest.csv")
    assert (manifest.label == "normal").sum() == 952
    # Out of the defect set: 4 empty masks and 2 of 1 and 3 pixels (annotation residue).
    assert (manifest.label == "defect").sum() == 392 - 4 - 2
    assert manifest.image_id.is_unique and len(manifest) == 1338
    assert (manifest[manifest.label == "defect"].mask_pixels >= MIN_PIXELS).all()


def test_the_four_empty_and_two_tiny_uneven_masks_are_reported(prepared):
    report, out, _ = prepared
    empty, tiny = _uneven_masks(0, 1), _uneven_masks(1, MIN_PIXELS)
    assert len(empty) == 4 and len(tiny) == 2
    # The 4 empty ones are all zero, not faint: nothing for another convention to find.
    assert all(np.asarray(Image.open(p)).max() == 0 for p in empty)
    excluded = {i.path for i in report.issues if i.kind == "empty_mask"}
    assert excluded == empty
    assert all("empty mask at >128" in i.reason for i in report.issues if i.kind == "empty_mask")
    assert {i.path for i in report.issues if i.kind == "tiny_defect"} == tiny
    assert not [i for i in report.issues if i.kind == "mask_below_threshold"]
    saved = json.loads((out / "mtd" / "report.json").read_text())["datasets"][0]
    assert {i["path"] for i in saved["issues"] if i["kind"] == "empty_mask"} == empty
    n_train = train_count(97, 0.5)  # 103 MT_Uneven images, 6 excluded
    assert saved["counts"]["MT_Uneven"]["uneven"] == {
        "found": 103,
        "in_manifest": 97,
        "train": n_train,
        "test": 97 - n_train,
    }


def test_masks_are_normalised_at_128(prepared):
    _, out, _ = prepared
    manifest = read_manifest(out / "mtd" / "manifest.csv")
    for row in manifest[manifest.label == "defect"].head(25).itertuples():
        raw = np.asarray(Image.open(Path(row.image_path).with_suffix(".png")))
        written = np.asarray(Image.open(resolve_manifest_path(row.mask_path, out / "mtd")))
        assert written.dtype == np.uint8 and set(np.unique(written)) <= {0, 255}
        assert np.array_equal(written == 255, raw > 128)
        assert written.shape == (row.height, row.width)


def test_prepare_is_within_the_time_budget(prepared):
    _, _, seconds = prepared
    print(f"MTD prepare: {seconds:.2f} s")
    assert seconds < TIME_BUDGET_S
