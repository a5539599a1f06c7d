"""MVTec AD 2: records per folder, mask pairing, the unlabelled private test sets, the mvtec
layout's refusal of an AD 2 root, and the twin through the whole prepare step.

Roots are written here file by file in the real layout (tiny PNGs), so the reader is checked
against the publisher's names, not only against the twin generator's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from spt.cli import main
from spt.data.config import parse_data_config
from spt.data.manifest import read_manifest
from spt.data.prepare import prepare_dataset
from spt.data.readers import READERS, get_reader
from spt.data.roots import diagnose_root
from spt.data.synthetic import MVTEC_AD2_PRODUCTS, TwinSize, twin_dataset_config, write_twin

# Relative paths of a small but complete object, as MVTec ships them.
OBJECT_FILES = (
    "train/good/000_regular.png",
    "train/good/001_regular.png",
    "validation/good/000_regular.png",
    "test_public/good/000_regular.png",
    "test_public/bad/000_regular.png",
    "test_public/bad/001_overexposed.png",
    "test_public/ground_truth/bad/000_regular_mask.png",
    "test_public/ground_truth/bad/001_overexposed_mask.png",
    "test_private/000_regular.png",
    "test_private/001_regular.png",
    "test_private/002_regular.png",
    "test_private_mixed/000_regular.png",
)


def _png(path: Path, mask: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((8, 8), np.uint8) if mask else np.full((8, 8, 3), 90, np.uint8)
    if mask:
        pixels[2:5, 2:5] = 255
    Image.fromarray(pixels).save(path)


def _write(root: Path, obj: str, files=OBJECT_FILES) -> Path:
    for relative in files:
        _png(root / obj / relative, mask="ground_truth" in relative)
    return root


def _scan(root: Path, dataset: str = "ad2"):
    return get_reader("mvtec_ad2").scan(dataset, root, {})


def _issues(result, kind: str):
    return [issue for issue in result.issues if issue.kind == kind]


def test_records_and_publisher_splits_per_folder(tmp_path):
    root = _write(tmp_path / "ad2", "can")
    _write(root, "vial", OBJECT_FILES[:4])  # an object without public defect images
    result = _scan(root)
    counts = Counter((r.category, r.defect_type, r.split) for r in result.records)
    assert counts == {
        ("can", "good", "train"): 3,  # train/good and validation/good: both train-side
        ("can", "good", "test"): 1,
        ("can", "bad", None): 2,  # no publisher split: the suite's protocol splits them
        ("vial", "good", "train"): 3,
        ("vial", "good", "test"): 1,
    }
    by_id = {r.image_id: r for r in result.records}
    validation = by_id["ad2/can/validation/good/000_regular"]
    assert validation.split == "train" and validation.mask_path is None
    assert by_id["ad2/can/test_public/good/000_regular"].split == "test"
    assert all(r.mask_path is None for r in result.records if r.is_normal)
    assert not any("test_private" in r.image_id for r in result.records)


def test_defect_masks_pair_by_whole_stem(tmp_path):
    root = _write(tmp_path / "ad2", "can")
    defects = {r.image_path.name: r.mask_path for r in _scan(root).records if not r.is_normal}
    gt = root / "can/test_public/ground_truth/bad"
    assert defects == {
        "000_regular.png": gt / "000_regular_mask.png",
        "001_overexposed.png": gt / "001_overexposed_mask.png",
    }


def test_missing_and_orphan_masks_are_reported(tmp_path):
    root = _write(tmp_path / "ad2", "can")
    gt = root / "can/test_public/ground_truth/bad"
    (gt / "001_overexposed_mask.png").unlink()
    _png(gt / "007_regular_mask.png", mask=True)  # no such image
    _png(gt / "000_regular.png", mask=True)  # a mask without the _mask suffix
    result = _scan(root)
    (missing,) = _issues(result, "missing_mask")
    image = root / "can/test_public/bad/001_overexposed.png"
    assert missing.action == "skipped" and missing.path == str(image)
    assert f"{gt}/001_overexposed_mask.png" in missing.reason
    orphans = sorted(Path(i.path).name for i in _issues(result, "orphan_mask"))
    assert orphans == ["000_regular.png", "007_regular_mask.png"]
    assert all(i.action == "ignored" for i in _issues(result, "orphan_mask"))
    assert [r.image_path.name for r in result.records if not r.is_normal] == ["000_regular.png"]


def test_private_test_sets_are_reported_unlabelled_and_give_no_records(tmp_path):
    root = _write(tmp_path / "ad2", "can")
    _png(root / "can/test_private_mixed/lot_b/001_regular.png")  # a sub-folder is counted too
    result = _scan(root)
    issues = {Path(i.path).name: i for i in _issues(result, "unlabelled_test")}
    assert sorted(issues) == ["test_private", "test_private_mixed"]
    assert issues["test_private"].action == "ignored"
    assert issues["test_private"].reason.startswith("3 test image(s)")
    assert issues["test_private_mixed"].reason.startswith("2 test image(s)")
    for issue in issues.values():
        assert "ground truth" in issue.reason and "never scored" in issue.reason
        assert "evaluation server" in issue.fix and "\n" not in issue.line()
    assert not any("test_private" in r.image_id for r in result.records)


def test_unread_folders_and_non_image_files_are_reported(tmp_path):
    root = _write(tmp_path / "ad2", "can")
    (root / "can/anomaly_maps").mkdir()
    (root / "can/test_public/extra").mkdir()
    (root / "downloads").mkdir()  # not an object
    (root / "can/train/good/notes.txt").write_text("x")
    result = _scan(root)
    strays = sorted(
        Path(i.path).relative_to(root).as_posix() for i in _issues(result, "stray_folder")
    )
    assert strays == ["can/anomaly_maps", "can/test_public/extra", "downloads"]
    (stray,) = _issues(result, "stray_file")
    assert Path(stray.path).name == "notes.txt" and stray.action == "ignored"


def test_ad2_signature_is_specific(tmp_path):
    ad2 = _write(tmp_path / "ad2", "can")
    reader = READERS["mvtec_ad2"]
    assert reader.looks_like(ad2)
    mvtec = tmp_path / "mvtec"
    _png(mvtec / "bottle/train/good/000.png")
    _png(mvtec / "bottle/test/good/000.png")
    assert not reader.looks_like(mvtec)  # train/good alone is MVTec AD's signature


def _params(tmp_path: Path, datasets: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"seed": 0, "datasets": datasets}}))
    return path


@pytest.mark.parametrize("layout", ["mvtec", "mpdd"])
def test_mvtec_layout_at_an_ad2_root_points_at_mvtec_ad2(tmp_path, capsys, layout):
    root = _write(tmp_path / "raw/ad2", "can")
    params = _params(tmp_path, {"mine": {"layout": layout, "root": str(root)}})
    out = tmp_path / "prepared"
    assert main(["prepare", "--params", str(params), "--out", str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    expected = (
        f"{root}: this is an MVTec AD 2 root (can/test_public); "
        "set layout: mvtec_ad2 for data.datasets.mine"
    )
    assert expected in err
    config = parse_data_config({"datasets": {"mine": {"layout": layout, "root": str(root)}}})
    report = prepare_dataset(config.datasets["mine"], tmp_path / "again", 0, 0.5)
    assert report.status == "failed" and report.error == expected


def test_a_private_folder_alone_is_enough_for_the_refusal(tmp_path):
    root = _write(tmp_path / "ad2", "can", ("train/good/000.png", "test_private_mixed/000.png"))
    config = parse_data_config({"datasets": {"x": {"layout": "mvtec", "root": str(root)}}})
    report = prepare_dataset(config.datasets["x"], tmp_path / "out", 0, 0.5)
    assert report.error == (
        f"{root}: this is an MVTec AD 2 root (can/test_private_mixed); "
        "set layout: mvtec_ad2 for data.datasets.x"
    )


def test_wrong_root_hints_name_mvtec_ad2_alone(tmp_path):
    root = _write(tmp_path / "ad2", "can")
    config = parse_data_config({"datasets": {"v": {"layout": "visa", "root": str(root)}}})
    message = diagnose_root(config.datasets["v"])
    # MVTec AD's (and MPDD's) signature also matches, but they would refuse the root.
    assert "(it looks like MVTec AD 2 (layout mvtec_ad2));" in message


def test_twin_prepares_with_defect_images_on_both_sides(tmp_path):
    size = TwinSize(normal_train=2, normal_test=1, defects_per_type=4)
    root = write_twin("mvtec_ad2", tmp_path / "twin", seed=2, size=size)
    config = twin_dataset_config("mvtec_ad2", root)
    report = prepare_dataset(config, tmp_path / "prepared", 2, 0.5)
    assert report.status == "prepared", report.error
    assert {i.kind for i in report.issues} == {"unlabelled_test"}
    assert len(report.issues) == 2 * len(MVTEC_AD2_PRODUCTS)
    manifest = read_manifest(tmp_path / "prepared" / config.name / "manifest.csv")
    for category in MVTEC_AD2_PRODUCTS:
        rows = manifest[manifest.category == category]
        defects = rows[rows.label == "defect"]
        assert set(defects.defect_type) == {"bad"} and len(defects) == size.defects_per_type
        assert Counter(defects.split) == {"train": 2, "test": 2}
        normals = rows[rows.label == "normal"]
        validation = normals[normals.image_id.str.contains("/validation/")]
        assert len(validation) == size.normal_test and set(validation.split) == {"train"}
        public = normals[normals.image_id.str.contains("/test_public/")]
        assert len(public) == size.normal_test and set(public.split) == {"test"}
    assert not manifest.image_id.str.contains("test_private").any()
