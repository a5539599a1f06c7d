"""Readers: records from each native layout (checked against the twins' known contents),
ids, pairing, and roots that point at the wrong folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from spt.data.config import DatasetConfig, parse_data_config
from spt.data.readers import READERS, get_reader
from spt.data.records import NORMAL
from spt.data.roots import diagnose_root
from spt.data.synthetic import (
    BTAD_PRODUCTS,
    MTD_CLASSES,
    MVTEC_PRODUCTS,
    VISA_PRODUCTS,
    TwinSize,
    twin_dataset_config,
    write_all_twins,
)
from spt.errors import SuiteError

SIZE = TwinSize(normal_train=2, normal_test=1, defects_per_type=2)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("twins")
    write_all_twins(out, seed=11, size=SIZE)
    return out


def _scan(twins: Path, layout: str):
    config = twin_dataset_config(layout, twins / layout)
    return get_reader(layout).scan(layout, config.root, config.options)


def test_registry_covers_every_layout():
    assert set(READERS) == {
        "mvtec",
        "mvtec_ad2",
        "visa",
        "mpdd",
        "btad",
        "ksdd2",
        "mtd",
        "spt_archive",
        "folder",
    }
    with pytest.raises(SuiteError, match="unknown dataset layout 'mvtecad'"):
        get_reader("mvtecad")


def test_mvtec_records(twins):
    result = _scan(twins, "mvtec")
    assert result.issues == []
    counts = Counter((r.category, r.defect_type, r.split) for r in result.records)
    expected = Counter()
    for category, product in MVTEC_PRODUCTS.items():
        expected[(category, NORMAL, "train")] = SIZE.normal_train
        expected[(category, NORMAL, "test")] = SIZE.normal_test
        for defect_type in product.defects:
            expected[(category, defect_type, "test")] = SIZE.defects_per_type
    assert counts == expected
    record = next(r for r in result.records if r.defect_type == "broken_large")
    assert record.image_id == "mvtec/bottle/test/broken_large/000"
    assert record.mask_path == twins / "mvtec/bottle/ground_truth/broken_large/000_mask.png"
    assert all(r.mask_path is None for r in result.records if r.is_normal)


def test_visa_records_take_the_split_csv(twins):
    result = _scan(twins, "visa")
    assert result.issues == []
    per_category = len(VISA_PRODUCTS["candle"].defects) * SIZE.defects_per_type
    defects = [r for r in result.records if not r.is_normal]
    assert len(defects) == per_category * len(VISA_PRODUCTS)
    assert {r.split for r in defects} == {"test"}
    normals = Counter(r.split for r in result.records if r.is_normal)
    assert normals == {"train": 2 * SIZE.normal_train, "test": 2 * SIZE.normal_test}
    assert all(r.mask_path.suffix == ".png" and r.image_path.suffix == ".JPG" for r in defects)


def test_btad_pairs_masks_by_stem_across_formats(twins):
    result = _scan(twins, "btad")
    assert result.issues == []
    for category, (_, _, image_suffix, mask_suffix, _) in BTAD_PRODUCTS.items():
        defects = [r for r in result.records if r.category == category and not r.is_normal]
        assert len(defects) == 2 * SIZE.defects_per_type
        for r in defects:
            assert r.image_path.suffix == image_suffix and r.mask_path.suffix == mask_suffix
            assert r.mask_path.stem == r.image_path.stem


def test_ksdd2_keeps_folder_split_and_lets_the_mask_decide(twins):
    result = _scan(twins, "ksdd2")
    assert result.issues == []
    assert all(
        r.label_from_mask and r.mask_path.name == f"{r.image_path.stem}_GT.png"
        for r in result.records
    )
    assert all(r.split == r.image_path.parent.name for r in result.records)
    assert not any(r.image_path.stem.endswith("_GT") for r in result.records)


def test_mtd_records(twins):
    result = _scan(twins, "mtd")
    counts = Counter((r.category, r.defect_type) for r in result.records)
    expected = {(f"MT_{c}", c.lower()): SIZE.defects_per_type for c in MTD_CLASSES}
    expected[("MT_Free", NORMAL)] = SIZE.normal_train + SIZE.normal_test
    assert counts == expected
    assert all(r.split is None for r in result.records)  # the publisher gives no split


def test_spt_archive_and_folder_records(twins):
    archive = _scan(twins, "spt_archive")
    assert {r.category for r in archive.records} == {"mvtec", "visa"}
    assert {r.split for r in archive.records} == {"train", "test"}
    folder = _scan(twins, "folder")
    normals = [r for r in folder.records if r.is_normal]
    assert len(normals) == SIZE.normal_train + SIZE.normal_test
    assert all(r.mask_path is None for r in normals)
    assert all(
        r.mask_path.name == f"{r.image_path.stem}_mask.png"
        for r in folder.records
        if not r.is_normal
    )


def test_btad_stem_pairing_survives_names_that_rstrip_would_break(tmp_path):
    # "pong.png".rstrip(".png") == "po": a reader that strips characters pairs the wrong mask.
    category = tmp_path / "01"
    for folder in ("train/ok", "test/ko", "ground_truth/ko"):
        (category / folder).mkdir(parents=True)
    (category / "train/ok/0.bmp").write_bytes(b"x")
    (category / "test/ko/pong.bmp").write_bytes(b"x")
    (category / "ground_truth/ko/pong.png").write_bytes(b"x")
    result = get_reader("btad").scan("btad", tmp_path, {})
    (defect,) = [r for r in result.records if not r.is_normal]
    assert defect.mask_path.name == "pong.png"


def _config(name: str, layout: str, root: Path) -> DatasetConfig:
    return parse_data_config({"datasets": {name: {"layout": layout, "root": str(root)}}}).datasets[
        name
    ]


def test_root_at_another_dataset_is_named(twins):
    message = diagnose_root(_config("mvtec", "mvtec", twins / "mtd"))
    assert message is not None
    assert (
        str(twins / "mtd") in message and "MTD" in message and "data.datasets.mvtec.root" in message
    )
    assert diagnose_root(_config("mvtec", "mvtec", twins / "mvtec")) is None


def test_root_one_level_off_gets_a_suggestion(twins):
    too_high = diagnose_root(_config("visa", "visa", twins))
    assert f"did you mean root: {(twins / 'visa').as_posix()}" in too_high
    too_deep = diagnose_root(_config("mvtec", "mvtec", twins / "mvtec" / "bottle"))
    assert f"did you mean root: {(twins / 'mvtec').as_posix()}" in too_deep


def test_every_twin_is_recognised_only_by_its_own_layout(twins):
    for layout, reader in READERS.items():
        if layout == "folder":
            continue
        assert reader.looks_like(twins / layout), layout
        others = [
            other.layout
            for other in READERS.values()
            if other.layout
            not in ("folder", layout, {"mvtec": "mpdd", "mpdd": "mvtec"}.get(layout))
            and other.looks_like(twins / layout)
            # MVTec AD's signature (train/good) also fits an AD 2 root, which its scan refuses
            and other.superseded_by(twins / layout) != layout
        ]
        assert others == [], f"{layout} twin also looks like {others}"


def test_config_errors_are_one_line(tmp_path):
    cases = [
        ({"train_fraction": 1.5}, "train_fraction"),
        ({"seed": "zero"}, "seed"),
        ({"datasets": {"MVTec": {"layout": "mvtec"}}}, "lower-case"),
        ({"datasets": {"x": {"root": "data/x"}}}, "layout"),
        ({"datasets": {"x": {"layout": "mvtec", "images": "imgs"}}}, "unknown keys"),
        ({"datasets": {"x": {"layout": "folder", "mask_convention": "otsu"}}}, "mask_convention"),
        (
            {"datasets": {"x": {"layout": "folder", "mask_suffix": 5}}},
            "x.mask_suffix must be a string",
        ),
        ({"datasets": {"x": {"layout": "mtd", "root": ["data"]}}}, "x.root must be a string"),
    ]
    for section, needle in cases:
        with pytest.raises(SuiteError) as info:
            parse_data_config(section)
        assert needle in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SuiteError) as info:
        parse_data_config({"datasets": {"x": {"layout": "mvtecad"}}}, "other.yaml")
    assert str(info.value).startswith("other.yaml: data.datasets.x.layout: unknown dataset layout")
    assert "params.yaml" not in str(info.value)
    default = parse_data_config({"raw_root": "raw", "datasets": {"mtd": {"layout": "mtd"}}})
    assert default.datasets["mtd"].root == Path("raw/mtd") and default.train_fraction == 0.5
