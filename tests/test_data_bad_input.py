"""Bad input: every case ends as a counted report entry (or a one-line error) naming the file,
and never stops the other images or datasets from being prepared."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spt.data.config import parse_data_config
from spt.data.manifest import read_manifest, resolve_manifest_path
from spt.data.prepare import prepare_all
from spt.data.synthetic import TwinSize, write_twin

SIZE = TwinSize(normal_train=2, normal_test=1, defects_per_type=3)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pristine")
    for layout in ("mvtec", "visa", "btad", "mtd"):
        write_twin(layout, out / layout, seed=5, size=SIZE)
    return out


@pytest.fixture
def raw(pristine, tmp_path) -> Path:
    """A private, writable copy of the twins for one test to damage."""
    target = tmp_path / "raw"
    shutil.copytree(pristine, target)
    return target


def _prepare(raw: Path, out: Path, **roots: str):
    datasets = {
        name: {"layout": name, "root": str(raw / name)} for name in ("mvtec", "visa", "btad", "mtd")
    }
    for name, root in roots.items():
        datasets[name]["root"] = str(root)
    config = parse_data_config({"datasets": datasets})
    reports = {r.name: r for r in prepare_all(config, out_root=out, workers=1)}
    return reports


def _issues(report, kind):
    return [issue for issue in report.issues if issue.kind == kind]


def _manifest_ids(out: Path, name: str) -> set[str]:
    return set(read_manifest(out / name / "manifest.csv")["image_id"])


def _expected_twin_note(issue) -> bool:
    """What an undamaged twin reports: its excluded empty mask, MTD's unread normal masks,
    the MVTec twin's readme.txt."""
    return (
        issue.action == "excluded"
        or issue.kind == "normal_masks"
        or (issue.kind == "not_read" and issue.path.endswith("readme.txt"))
    )


def _assert_others_fine(reports, damaged: str):
    for name, report in reports.items():
        assert report.status == "prepared", (name, report.error)
        if name != damaged:
            assert all(_expected_twin_note(i) for i in report.issues), name


MVTEC_DEFECT = Path("mvtec/bottle/test/contamination/001.png")
MVTEC_MASK = Path("mvtec/bottle/ground_truth/contamination/001_mask.png")
MVTEC_ID = "mvtec/bottle/test/contamination/001"


def test_corrupt_image(raw, tmp_path):
    (raw / MVTEC_DEFECT).write_bytes(b"this is not a png")
    reports = _prepare(raw, tmp_path / "out")
    (issue,) = _issues(reports["mvtec"], "unreadable_image")
    assert issue.action == "skipped" and issue.path == str(raw / MVTEC_DEFECT)
    assert MVTEC_ID not in _manifest_ids(tmp_path / "out", "mvtec")
    assert "mvtec/bottle/test/contamination/000" in _manifest_ids(tmp_path / "out", "mvtec")
    _assert_others_fine(reports, "mvtec")


def test_truncated_jpeg_image(raw, tmp_path):
    image = raw / "visa/candle/Data/Images/Anomaly/000.JPG"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    reports = _prepare(raw, tmp_path / "out")
    (issue,) = _issues(reports["visa"], "unreadable_image")
    assert issue.path == str(image) and "truncated" in issue.reason
    assert "visa/candle/Data/Images/Anomaly/000" not in _manifest_ids(tmp_path / "out", "visa")
    _assert_others_fine(reports, "visa")


def test_truncated_png_mask(raw, tmp_path):
    data = (raw / MVTEC_MASK).read_bytes()
    (raw / MVTEC_MASK).write_bytes(data[: len(data) - 40])
    reports = _prepare(raw, tmp_path / "out")
    (issue,) = _issues(reports["mvtec"], "unreadable_mask")
    assert issue.action == "skipped" and issue.path == str(raw / MVTEC_MASK)
    assert MVTEC_ID not in _manifest_ids(tmp_path / "out", "mvtec")


def test_mask_and_image_of_different_sizes(raw, tmp_path):
    mask = Image.open(raw / MVTEC_MASK)
    mask.resize((mask.width // 2, mask.height), Image.NEAREST).save(raw / MVTEC_MASK)
    reports = _prepare(raw, tmp_path / "out")
    (issue,) = _issues(reports["mvtec"], "size_mismatch")
    assert issue.path == str(raw / MVTEC_MASK) and str(raw / MVTEC_DEFECT) in issue.reason
    assert f"{mask.width // 2}x{mask.height}" in issue.reason
    assert MVTEC_ID not in _manifest_ids(tmp_path / "out", "mvtec")


def test_missing_mask(raw, tmp_path):
    (raw / MVTEC_MASK).unlink()
    btad_mask = next((raw / "btad/02/ground_truth/ko").iterdir())
    btad_mask.unlink()
    reports = _prepare(raw, tmp_path / "out")
    (issue,) = _issues(reports["mvtec"], "missing_mask")
    assert issue.path == str(raw / MVTEC_DEFECT) and "001_mask.png" in issue.reason
    (issue,) = _issues(reports["btad"], "missing_mask")
    assert Path(issue.path).stem == btad_mask.stem
    assert reports["mvtec"].totals()["skipped"] == 1


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "I;16", "P"])
def test_converted_masks_are_repaired_and_reported(raw, tmp_path, mode):
    binary = np.asarray(Image.open(raw / MVTEC_MASK))
    if mode == "RGB":
        converted = Image.fromarray(np.stack([binary] * 3, axis=2))
    elif mode == "RGBA":
        converted = Image.fromarray(np.stack([binary] * 3 + [np.full_like(binary, 255)], axis=2))
    elif mode == "I;16":
        converted = Image.fromarray(binary.astype(np.uint16) * 257)
    else:
        converted = Image.fromarray(binary).convert("P")
    (raw / MVTEC_MASK).write_bytes(_encode(converted))
    assert Image.open(raw / MVTEC_MASK).mode == mode
    out = tmp_path / "out"
    reports = _prepare(raw, out)
    (issue,) = _issues(reports["mvtec"], "mask_converted")
    assert issue.action == "repaired" and issue.path == str(raw / MVTEC_MASK)
    manifest = read_manifest(out / "mvtec" / "manifest.csv").set_index("image_id")
    written = np.asarray(
        Image.open(resolve_manifest_path(manifest.loc[MVTEC_ID, "mask_path"], out / "mvtec"))
    )
    assert written.dtype == np.uint8 and written.ndim == 2
    assert np.array_equal(written, np.where(binary > 128, 255, 0))
    assert manifest.loc[MVTEC_ID, "mask_pixels"] == int((binary > 128).sum())


def test_empty_mask_on_a_defect_image(raw, tmp_path):
    mask = np.asarray(Image.open(raw / MVTEC_MASK))
    Image.fromarray(np.zeros_like(mask)).save(raw / MVTEC_MASK)
    reports = _prepare(raw, tmp_path / "out")
    (issue,) = _issues(reports["mvtec"], "empty_mask")
    assert issue.action == "excluded" and "empty mask at >128" in issue.reason
    assert MVTEC_ID not in _manifest_ids(tmp_path / "out", "mvtec")
    assert reports["mvtec"].totals()["excluded"] == 1


def test_duplicate_ids(raw, tmp_path):
    first = raw / "btad/02/train/ok/0000.png"
    twin = first.with_suffix(".bmp")
    Image.open(first).save(twin)
    reports = _prepare(raw, tmp_path / "out")
    entries = _issues(reports["btad"], "duplicate_id")
    assert sorted(Path(i.path).name for i in entries) == ["0000.bmp", "0000.png"]
    assert all("btad/02/train/ok/0000" in i.reason for i in entries)
    assert "btad/02/train/ok/0000" not in _manifest_ids(tmp_path / "out", "btad")
    assert "btad/02/train/ok/0001" in _manifest_ids(tmp_path / "out", "btad")


def test_root_at_another_dataset_fails_alone(raw, tmp_path):
    out = tmp_path / "out"
    reports = _prepare(raw, out, mvtec=raw / "mtd")
    assert reports["mvtec"].status == "failed"
    assert "MTD" in reports["mvtec"].error and str(raw / "mtd") in reports["mvtec"].error
    assert not (out / "mvtec" / "manifest.csv").exists()
    for name in ("visa", "btad", "mtd"):
        assert reports[name].status == "prepared" and (out / name / "manifest.csv").is_file()


def test_root_at_a_wrong_folder(raw, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a dataset")
    reports = _prepare(raw, tmp_path / "out", visa=empty)
    assert reports["visa"].status == "failed" and "not a VisA root" in reports["visa"].error
    assert reports["mvtec"].status == "prepared"


def test_stale_outputs_of_a_failed_dataset_are_removed(raw, tmp_path):
    out = tmp_path / "out"
    _prepare(raw, out)
    assert (out / "mvtec" / "manifest.csv").is_file()
    reports = _prepare(raw, out, mvtec=raw / "visa")
    assert reports["mvtec"].status == "failed"
    assert not (out / "mvtec" / "manifest.csv").exists() and not (out / "mvtec" / "masks").exists()
    assert (out / "mvtec" / "report.json").is_file()


def test_orphan_mask_and_stray_file_are_reported(raw, tmp_path):
    (raw / "mvtec/bottle/ground_truth/contamination/999_mask.png").write_bytes(
        (raw / MVTEC_MASK).read_bytes()
    )
    (raw / "mvtec/bottle/test/good/notes.txt").write_text("x")
    reports = _prepare(raw, tmp_path / "out")
    assert [Path(i.path).name for i in _issues(reports["mvtec"], "orphan_mask")] == ["999_mask.png"]
    assert [Path(i.path).name for i in _issues(reports["mvtec"], "stray_file")] == ["notes.txt"]


def test_masks_paired_by_stem_report_missing_and_unused_masks(raw, tmp_path):
    # BTAD and VisA pair a defect image with the mask of the same stem in one mask folder.
    visa_masks = raw / "visa/pcb1/Data/Masks/Anomaly"
    visa_gone = sorted(visa_masks.iterdir())[0]
    visa_gone.unlink()
    btad_masks = raw / "btad/02/ground_truth/ko"
    btad_spare = btad_masks / "spare.png"
    btad_spare.write_bytes(sorted(btad_masks.iterdir())[0].read_bytes())
    visa_spare = visa_masks / "spare.png"
    visa_spare.write_bytes(sorted(visa_masks.iterdir())[0].read_bytes())
    reports = _prepare(raw, tmp_path / "out")
    (issue,) = _issues(reports["visa"], "missing_mask")
    assert Path(issue.path).stem == visa_gone.stem and str(visa_gone) in issue.reason
    assert [i.path for i in _issues(reports["visa"], "orphan_mask")] == [str(visa_spare)]
    assert [i.path for i in _issues(reports["btad"], "orphan_mask")] == [str(btad_spare)]
    assert not _issues(reports["btad"], "missing_mask")


def test_image_listed_in_visa_split_csv_but_absent(raw, tmp_path):
    gone = raw / "visa/pcb1/Data/Images/Normal/0000.JPG"
    gone.unlink()
    (raw / "mvtec/licences").mkdir()
    reports = _prepare(raw, tmp_path / "out")
    (issue,) = _issues(reports["visa"], "missing_image")
    assert issue.action == "skipped" and issue.path == str(gone) and "1cls.csv" in issue.reason
    (issue,) = _issues(reports["mvtec"], "stray_folder")
    assert issue.action == "ignored" and issue.path == str(raw / "mvtec/licences")


def test_root_with_the_right_shape_but_no_images_fails_alone(raw, tmp_path):
    hollow = tmp_path / "hollow"
    (hollow / "bottle" / "train" / "good").mkdir(parents=True)
    reports = _prepare(raw, tmp_path / "out", mvtec=hollow)
    assert reports["mvtec"].status == "failed" and "no usable images" in reports["mvtec"].error
    assert reports["visa"].status == "prepared"


def test_broken_links_and_folders_named_like_images_are_reported(raw, tmp_path):
    good = raw / "mvtec/bottle/test/good"
    (good / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (good / "loop.png").symlink_to(good / "loop.png")
    (good / "folder.png").mkdir()
    mask_link = raw / "btad/02/ground_truth/ko/extra.png"
    mask_link.symlink_to(tmp_path / "nowhere.png")
    mtd_link = raw / "mtd/MT_Free/Imgs/gone.jpg"
    mtd_link.symlink_to(tmp_path / "nowhere.jpg")
    reports = _prepare(raw, tmp_path / "out")
    entries = _issues(reports["mvtec"], "unreadable_entry")
    assert {i.path: i.reason for i in entries} == {
        str(good / "broken.png"): "broken or looping link",
        str(good / "loop.png"): "broken or looping link",
        str(good / "folder.png"): "a folder named like an image file",
    }
    assert all(i.action == "skipped" and i.fix for i in entries)
    assert [i.path for i in _issues(reports["btad"], "unreadable_entry")] == [str(mask_link)]
    assert [i.path for i in _issues(reports["mtd"], "unreadable_entry")] == [str(mtd_link)]
    saved = (tmp_path / "out/mvtec/report.json").read_text()
    assert saved.count('"unreadable_entry"') == 3
    assert reports["mvtec"].status == "prepared"


def test_folder_layout_mask_that_is_a_broken_link_is_not_called_normal(tmp_path):
    root = tmp_path / "line"
    write_twin("folder", root, seed=5, size=SIZE)
    mask = sorted((root / "masks").iterdir())[0]
    mask.unlink()
    mask.symlink_to(tmp_path / "nowhere.png")
    (root / "masks" / "stray.png").mkdir()
    spec = {"layout": "folder", "root": str(root), "mask_suffix": "_mask"}
    config = parse_data_config({"datasets": {"line": spec}})
    (report,) = prepare_all(config, out_root=tmp_path / "out", workers=1)
    (issue,) = _issues(report, "unreadable_mask")
    assert issue.path == str(mask) and "not a readable file" in issue.reason
    image_id = "line/images/" + mask.stem.removesuffix("_mask")
    assert image_id not in _manifest_ids(tmp_path / "out", "line")
    assert [i.path for i in _issues(report, "unreadable_entry")] == [str(root / "masks/stray.png")]


def _in_a_thread(call, seconds: float = 60.0):
    """Run ``call`` with a deadline: a read from a FIFO would block for ever (issue #14)."""
    import threading

    result: dict = {}

    def target():
        try:
            result["value"] = call()
        except BaseException as exc:  # handed to the test below
            result["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked on a special file"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_a_fifo_where_a_mask_or_an_image_should_be_is_reported_not_read(tmp_path):
    root = tmp_path / "line"
    write_twin("folder", root, seed=5, size=SIZE)
    mask = sorted((root / "masks").iterdir())[0]
    mask.unlink()
    os.mkfifo(mask)
    spec = {"layout": "folder", "root": str(root), "mask_suffix": "_mask"}
    config = parse_data_config({"datasets": {"line": spec}})
    (report,) = _in_a_thread(lambda: prepare_all(config, out_root=tmp_path / "out", workers=1))
    assert any(issue.path == str(mask) for issue in report.issues), report.issues
    assert report.status == "prepared"
    image = tmp_path / "image.png"
    os.mkfifo(image)
    from spt.data.images import read_rgb
    from spt.errors import SuiteError

    with pytest.raises(SuiteError, match="is not a regular file"):
        _in_a_thread(lambda: read_rgb(image))


@pytest.mark.parametrize("images", ["../../lineimgs", "ABSOLUTE"])
def test_folder_options_outside_the_root_are_refused_before_anything_is_written(tmp_path, images):
    """Issue #14: `images: ../../lineimgs` made ids hold `..`, and prepare wrote the normalised
    masks over the raw images; an absolute folder outside the root was a ValueError traceback."""
    outside = tmp_path / "lineimgs"
    write_twin("folder", tmp_path / "twin", seed=5, size=SIZE)
    shutil.copytree(tmp_path / "twin" / "images", outside)
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    root = tmp_path / "a" / "b"
    shutil.copytree(tmp_path / "twin", root)
    option = str(outside) if images == "ABSOLUTE" else images
    spec = {"layout": "folder", "root": str(root), "images": option, "mask_suffix": "_mask"}
    config = parse_data_config({"datasets": {"line": spec}})
    (report,) = prepare_all(config, out_root=tmp_path / "out", workers=1)
    assert report.status == "failed" and "outside the dataset root" in report.error
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


def test_a_decompression_bomb_reaching_evaluate_is_one_line(tmp_path, monkeypatch):
    """Issue #14: a decompression bomb that reaches evaluate through an edited manifest was a
    traceback. (PIL's limit is lowered here so the bomb is small.)"""
    from PIL import Image

    from spt.data.images import read_rgb
    from spt.errors import SuiteError

    path = tmp_path / "bomb.png"
    Image.new("RGB", (400, 400)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 160,000 > 2 x 100: PIL refuses
    with pytest.raises(SuiteError, match="too large to decode"):
        read_rgb(path)
