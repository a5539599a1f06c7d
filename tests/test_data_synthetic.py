"""Synthetic twins: each layout's file names, extensions and mask conventions; determinism."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spt.data.stable_random import stable_rng
from spt.data.synthetic import (
    BTAD_PRODUCTS,
    MARKER,
    MPDD_PRODUCTS,
    MVTEC_PRODUCTS,
    TWIN_LAYOUTS,
    VISA_PRODUCTS,
    TwinSize,
    write_all_twins,
    write_twin,
)
from spt.data.synthetic_draw import DEFECTS, TEXTURES, apply_defect, defect_mask, texture
from spt.errors import SuiteError

SIZE = TwinSize(normal_train=2, normal_test=1, defects_per_type=2)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("twins")
    write_all_twins(out, seed=3, size=SIZE)
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MARKER)


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in _files(root)
    }


def _values(path: Path) -> set[int]:
    return set(np.unique(np.asarray(Image.open(path))).tolist())


@pytest.mark.parametrize("layout,products", [("mvtec", MVTEC_PRODUCTS), ("mpdd", MPDD_PRODUCTS)])
def test_mvtec_style_twin(twins, layout, products):
    root = twins / layout
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(products)
    for category, product in products.items():
        assert len(list((root / category / "train" / "good").glob("*.png"))) == SIZE.normal_train
        assert len(list((root / category / "test" / "good").glob("*.png"))) == SIZE.normal_test
        for defect_type in product.defects:
            images = sorted((root / category / "test" / defect_type).iterdir())
            assert [p.name for p in images] == [
                f"{i:03d}.png" for i in range(SIZE.defects_per_type)
            ]
            for image in images:
                mask = root / category / "ground_truth" / defect_type / f"{image.stem}_mask.png"
                assert Image.open(mask).mode == "L"
                assert _values(mask) == {0, 255}
                assert Image.open(mask).size == Image.open(image).size
        mode = Image.open(root / category / "train" / "good" / "000.png").mode
        assert mode == ("RGB" if product.rgb else "L")


def test_visa_twin_has_class_id_masks_and_split_csv(twins):
    root = twins / "visa"
    with (root / "split_csv" / "1cls.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["object", "split", "label", "image", "mask"]
    for category, product in VISA_PRODUCTS.items():
        anomalies = sorted((root / category / "Data" / "Images" / "Anomaly").iterdir())
        assert all(p.suffix == ".JPG" for p in anomalies)
        assert len(anomalies) == len(product.defects) * SIZE.defects_per_type
        ids_seen = set()
        for image in anomalies:
            mask = root / category / "Data" / "Masks" / "Anomaly" / f"{image.stem}.png"
            values = _values(mask)
            assert 0 in values and values <= {0, 1, 2}  # class ids, not 0/255
            ids_seen |= values - {0}
        assert ids_seen == {int(k) for k in product.defects}
    for row in rows:
        assert (root / row["image"]).is_file()
        if row["label"] == "anomaly":
            assert row["split"] == "test" and (root / row["mask"]).is_file()
    assert {r["split"] for r in rows if r["label"] == "normal"} == {"train", "test"}


def test_btad_twin_mixes_formats_per_product(twins):
    root = twins / "btad"
    for category, (_, _, image_suffix, mask_suffix, _) in BTAD_PRODUCTS.items():
        for folder in ("train/ok", "test/ok", "test/ko"):
            assert {p.suffix for p in (root / category / folder).iterdir()} == {image_suffix}
        masks = list((root / category / "ground_truth" / "ko").iterdir())
        assert {p.suffix for p in masks} == {mask_suffix}
        stems = {p.stem for p in (root / category / "test" / "ko").iterdir()}
        assert {p.stem for p in masks} == stems
    assert (BTAD_PRODUCTS["01"][2], BTAD_PRODUCTS["01"][3]) == (".bmp", ".png")
    assert (BTAD_PRODUCTS["03"][2], BTAD_PRODUCTS["03"][3]) == (".bmp", ".bmp")


def test_ksdd2_twin_has_gt_beside_every_image_and_defects_on_both_sides(twins):
    root = twins / "ksdd2"
    for split in ("train", "test"):
        images = [p for p in (root / split).glob("*.png") if not p.stem.endswith("_GT")]
        defective = 0
        for image in images:
            gt = root / split / f"{image.stem}_GT.png"
            assert gt.is_file()
            defective += int(np.asarray(Image.open(gt)).max() > 0)
        assert 0 < defective < len(images)


def test_mtd_twin_has_soft_masks_and_one_all_zero_uneven_mask(twins):
    root = twins / "mtd"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "MT_Blowhole",
        "MT_Break",
        "MT_Crack",
        "MT_Fray",
        "MT_Free",
        "MT_Uneven",
    ]
    for image in root.rglob("*.jpg"):
        assert image.with_suffix(".png").is_file()
    crack_values = set().union(*(_values(p) for p in (root / "MT_Crack" / "Imgs").glob("*.png")))
    assert crack_values - {0, 255}, "MTD masks are not strictly binary"
    peaks = [np.asarray(Image.open(p)).max() for p in (root / "MT_Uneven" / "Imgs").glob("*.png")]
    assert sum(peak == 0 for peak in peaks) == 1  # as the 4 real empty ones: all zero
    assert all(peak == 255 for peak in peaks if peak)
    assert all(
        np.asarray(Image.open(p)).max() == 0 for p in (root / "MT_Free" / "Imgs").glob("*.png")
    )


def test_spt_archive_and_folder_twins(twins):
    archive = twins / "spt_archive"
    for subset in ("mvtec", "visa"):
        for split in ("train", "test"):
            images = list((archive / subset / split).glob("*.jpg"))
            assert images and all(p.with_suffix(".png").is_file() for p in images)
    folder = twins / "folder"
    masks = {p.name for p in (folder / "masks").iterdir()}
    images = sorted((folder / "images").iterdir())
    with_mask = [p for p in images if f"{p.stem}_mask.png" in masks]
    assert 0 < len(with_mask) < len(images)  # normal parts have no mask
    assert len(masks) == len(with_mask)


def test_rerun_is_byte_identical_and_seed_matters(tmp_path):
    first = write_twin("visa", tmp_path / "a" / "visa", seed=7, size=SIZE)
    second = write_twin("visa", tmp_path / "b" / "visa", seed=7, size=SIZE)
    other = write_twin("visa", tmp_path / "c" / "visa", seed=8, size=SIZE)
    assert _digest(first) == _digest(second)
    assert _digest(first).keys() == _digest(other).keys()
    assert _digest(first) != _digest(other)
    # Rewriting in place replaces the earlier twin and gives the same bytes again.
    write_twin("visa", first, seed=7, size=SIZE)
    assert _digest(first) == _digest(second)


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mvtec").mkdir()
    (tmp_path / "mvtec" / "precious.txt").write_text("user data")
    with pytest.raises(SuiteError, match="not a synthetic twin"):
        write_twin("mvtec", tmp_path / "mvtec")
    assert (tmp_path / "mvtec" / "precious.txt").read_text() == "user data"


def test_sizes_scale_the_twin(tmp_path):
    big = TwinSize(normal_train=5, normal_test=1, defects_per_type=4)
    root = write_twin("mtd", tmp_path / "mtd", seed=0, size=big)
    assert len(list((root / "MT_Free" / "Imgs").glob("*.jpg"))) == 6
    assert len(list((root / "MT_Crack" / "Imgs").glob("*.jpg"))) == 4
    assert set(TWIN_LAYOUTS) >= {"mvtec", "visa", "mpdd", "btad", "ksdd2", "mtd"}


@pytest.mark.parametrize("kind", DEFECTS)
def test_every_defect_is_drawn_where_its_mask_is(kind):
    rng = stable_rng("test", kind)
    surface = texture(TEXTURES[len(kind) % len(TEXTURES)], 80, 96, rng)
    mask = defect_mask(kind, 80, 96, rng)
    assert mask.shape == (80, 96) and mask.any() and not mask.all()
    painted = apply_defect(surface, mask, kind, rng)
    assert np.array_equal(painted[~mask], surface[~mask])  # nothing outside the mask changes
    assert not np.allclose(painted[mask], surface[mask])


def test_seed_must_be_an_integer_as_prepare_requires(tmp_path):
    with pytest.raises(SuiteError, match=r"data\.seed .*must be an integer >= 0, got 'abc'"):
        write_twin("mtd", tmp_path / "mtd", seed="abc", size=SIZE)
    assert not (tmp_path / "mtd").exists()


def test_too_small_sizes_name_the_flag_and_the_params_key():
    with pytest.raises(SuiteError) as info:
        TwinSize(normal_train=1, normal_test=1, defects_per_type=1)
    message = str(info.value)
    assert "--defects-per-type" in message and "data.synthetic.defects_per_type" in message
    assert "defects_per_type is 1" in message and "\n" not in message
    with pytest.raises(SuiteError, match="--normal-test"):
        TwinSize(normal_train=1, normal_test=0, defects_per_type=2)


def test_rewriting_a_twin_never_deletes_a_file_it_did_not_write(tmp_path):
    """Issue #14: `spt synth` over an existing twin deleted files a user had added there."""
    root = write_twin("mtd", tmp_path / "mtd", seed=0, size=SIZE)
    first = {p.relative_to(root): p.read_bytes() for p in _files(root)}
    write_twin("mtd", root, seed=0, size=SIZE)  # only its own files: replaced, same bytes
    assert {p.relative_to(root): p.read_bytes() for p in _files(root)} == first
    notes = root / "MT_Blowhole" / "my_notes.txt"
    notes.write_text("mine")
    with pytest.raises(SuiteError, match=r"did not write \(e.g. MT_Blowhole/my_notes.txt\)"):
        write_twin("mtd", root, seed=1, size=SIZE)
    assert notes.read_text() == "mine" and len(_files(root)) == len(first) + 1


def test_a_synth_killed_part_way_leaves_the_earlier_twin_and_reruns(tmp_path, monkeypatch):
    """The twin is written beside its folder and renamed into place: a run stopped part way
    (an exception here, a SIGKILL in life) leaves the earlier twin as it was, and the next run
    clears the unfinished copy itself."""
    import spt.data.synthetic as synthetic

    root = tmp_path / "mtd"
    write_twin("mtd", root, seed=1, size=TwinSize(1, 1, 2))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def dies_part_way(folder, seed, size):
        synthetic._save(folder / "MT_Free" / "Imgs" / "x.jpg", np.zeros((8, 8), np.uint8))
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_mtd", dies_part_way)
    with pytest.raises(KeyboardInterrupt):
        write_twin("mtd", root, seed=2, size=TwinSize(1, 1, 2))
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert (tmp_path / ".mtd.partial").is_dir()
    monkeypatch.undo()
    write_twin("mtd", root, seed=2, size=TwinSize(1, 1, 2))
    assert not (tmp_path / ".mtd.partial").exists()
    assert "seed 2" in (root / MARKER).read_text()
