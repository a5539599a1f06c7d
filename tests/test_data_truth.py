"""Data that tells the truth (#13): inputs that used to be misread without a word.

Every root here is written file by file in the real layout (not through the twin generator,
which shares the readers' assumptions), then prepared as a user would.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spt.data.config import parse_data_config
from spt.data.images import MAX_IMAGE_PIXELS, read_rgb
from spt.data.manifest import read_manifest
from spt.data.prepare import prepare_all
from spt.errors import SuiteError

H, W = 24, 32


def _png(path: Path, array: np.ndarray, mode: str | None = None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array, mode)
    image.save(path, **save)
    return path


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _square(value: int = 255, dtype=np.uint8) -> np.ndarray:
    mask = np.zeros((H, W), dtype)
    mask[6:14, 8:20] = value
    return mask


def _prepare(tmp_path: Path, name: str, spec: dict, **data):
    config = parse_data_config({"datasets": {name: spec}, **data})
    (report,) = prepare_all(config, out_root=tmp_path / "out", workers=1)
    return report


def _kinds(report, kind: str) -> list:
    return [issue for issue in report.issues if issue.kind == kind]


def _manifest(tmp_path: Path, name: str):
    return read_manifest(tmp_path / "out" / name / "manifest.csv").set_index("image_id")


# --- the decoding rule: 16-bit, EXIF orientation, pixel limit ------------------------------


def test_sixteen_bit_grey_image_is_scaled_not_clipped(tmp_path):
    root = tmp_path / "line"
    wide = (np.arange(H * W).reshape(H, W) * 60).astype(np.uint16)  # 0 .. 46020
    image = _png(root / "images" / "a.png", wide)
    _png(root / "images" / "b.png", _rgb(1))
    assert Image.open(image).mode.startswith("I")
    report = _prepare(tmp_path, "line", {"layout": "folder", "root": str(root)})
    (note,) = _kinds(report, "image_converted")
    assert note.path == str(image) and "16-bit" in note.reason
    pixels = read_rgb(image)
    expected = np.rint(wide * 255.0 / 65535.0).astype(np.uint8)
    assert pixels.shape == (H, W, 3) and np.array_equal(pixels[..., 0], expected)
    assert pixels.max() < 255  # Pillow's own conversion clips everything above 255 to white
    assert np.asarray(Image.open(image).convert("RGB")).max() == 255


def _exif_rotated(path: Path, array: np.ndarray, orientation: int) -> Path:
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif)
    return path


def test_exif_rotated_image_is_refused_at_prepare_and_at_read(tmp_path):
    root = tmp_path / "line"
    rotated = _exif_rotated(root / "images" / "a.png", _rgb(2), 6)
    _exif_rotated(root / "images" / "b.png", _rgb(3), 1)  # orientation 1: as stored, fine
    _png(root / "masks" / "a.png", _square())
    _png(root / "masks" / "b.png", _square())
    report = _prepare(tmp_path, "line", {"layout": "folder", "root": str(root)})
    (refused,) = _kinds(report, "refused_image")
    assert refused.path == str(rotated) and "EXIF orientation 6" in refused.reason
    assert "exif_transpose" in refused.reason
    assert list(_manifest(tmp_path, "line").index) == ["line/images/b"]
    with pytest.raises(SuiteError, match="EXIF orientation 6"):
        read_rgb(rotated)


def _claimed_size_png(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header claims width x height (a decompression bomb's signature)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_image_above_the_pixel_limit_is_refused_from_its_header(tmp_path):
    root = tmp_path / "line"
    side = int(MAX_IMAGE_PIXELS**0.5) + 100  # 9500 x 9500 in the issue: above the limit too
    huge = _claimed_size_png(root / "images" / "huge.png", side, side)
    _png(root / "images" / "ok.png", _rgb(4))
    report = _prepare(tmp_path, "line", {"layout": "folder", "root": str(root)})
    (refused,) = _kinds(report, "refused_image")
    assert refused.path == str(huge) and "million pixels" in refused.reason
    with pytest.raises(SuiteError, match="million pixels"):
        read_rgb(huge)


# --- folder masks in other conventions ---------------------------------------------------


def _folder_with_masks(root: Path, masks: dict[str, np.ndarray], mode: str | None = None):
    for i, (stem, mask) in enumerate(masks.items()):
        _png(root / "images" / f"{stem}.png", _rgb(10 + i))
        _png(root / "masks" / f"{stem}.png", mask, mode)


@pytest.mark.parametrize(
    ("values", "largest"),
    [(_square(1), 1), (_square(2), 2), (_square(1000, np.uint16), 1000)],
    ids=["zero-one", "class-id-2", "16-bit-1000"],
)
def test_folder_masks_below_the_threshold_are_not_called_normal(tmp_path, values, largest):
    root = tmp_path / "line"
    _folder_with_masks(root, {"a": values, "b": values})
    report = _prepare(tmp_path, "line", {"layout": "folder", "root": str(root)})
    below = _kinds(report, "mask_below_threshold")
    assert len(below) == 2 and f"largest value {largest}" in below[0].reason
    assert "mask_convention: nonzero" in below[0].fix
    assert report.totals().get("in_manifest_normal", 0) == 0  # not silently "normal"
    (whole,) = _kinds(report, "no_mask_foreground")
    assert whole.path == str(root) and "none of the 2 masks" in whole.reason
    # With the convention the hint names, the same files are defect images.
    fixed = _prepare(
        tmp_path, "line", {"layout": "folder", "root": str(root), "mask_convention": "nonzero"}
    )
    assert fixed.totals()["in_manifest_defect"] == 2
    assert all(issue.kind == "mask_converted" for issue in fixed.issues)  # 16-bit: noted


def test_palette_mask_with_red_foreground_is_a_defect(tmp_path):
    root = tmp_path / "line"
    _png(root / "images" / "a.png", _rgb(5))
    palette = Image.fromarray((_square() > 0).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))  # index 1 = pure red
    (root / "masks").mkdir(parents=True)
    palette.save(root / "masks" / "a.png")
    report = _prepare(tmp_path, "line", {"layout": "folder", "root": str(root)})
    assert report.totals()["in_manifest_defect"] == 1
    assert _manifest(tmp_path, "line").loc["line/images/a", "mask_pixels"] == 8 * 12


def test_nonzero_masks_whose_background_is_one_are_flagged(tmp_path):
    root = tmp_path / "line"
    inverted = np.ones((H, W), np.uint8)
    inverted[6:14, 8:20] = 2
    _folder_with_masks(root, {"a": inverted, "b": inverted, "c": _square(1)})
    spec = {"layout": "folder", "root": str(root), "mask_convention": "nonzero"}
    report = _prepare(tmp_path, "line", spec)
    assert len(_kinds(report, "mask_covers_image")) == 2
    (whole,) = _kinds(report, "masks_cover_images")
    assert "2 of 3 masks" in whole.reason and "background" in whole.fix


def test_mat_ground_truth_is_refused_with_a_hint_not_taken_as_normal(tmp_path):
    root = tmp_path / "cracks"
    _png(root / "images" / "001.jpg", _rgb(6))
    _png(root / "images" / "002.jpg", _rgb(7))
    (root / "masks").mkdir(parents=True)
    (root / "masks" / "001.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(100))
    _png(root / "masks" / "002.png", _square())
    report = _prepare(tmp_path, "cracks", {"layout": "folder", "root": str(root)})
    (mat,) = _kinds(report, "unsupported_mask_format")
    assert mat.path == str(root / "masks" / "001.mat") and ".mat" in mat.reason
    assert str(root / "masks" / "001.png") in mat.fix
    assert list(_manifest(tmp_path, "cracks").index) == ["cracks/images/002"]


def test_unannotated_images_can_be_excluded(tmp_path):
    root = tmp_path / "line"
    _png(root / "images" / "a.png", _rgb(8))
    _png(root / "images" / "b.png", _rgb(9))
    _png(root / "masks" / "a.png", _square())
    default = _prepare(tmp_path, "line", {"layout": "folder", "root": str(root)})
    assert default.totals()["in_manifest_normal"] == 1
    spec = {"layout": "folder", "root": str(root), "unannotated": "exclude"}
    report = _prepare(tmp_path, "line", spec)
    (left,) = _kinds(report, "unannotated")
    assert left.action == "excluded" and left.path == str(root / "images" / "b.png")
    assert list(_manifest(tmp_path, "line").index) == ["line/images/a"]
    with pytest.raises(SuiteError, match=r"unannotated: 'x' is not one of normal, exclude"):
        _prepare(tmp_path, "line", {"layout": "folder", "root": str(root), "unannotated": "x"})


def test_folder_link_to_itself_is_not_followed(tmp_path):
    root = tmp_path / "line"
    _png(root / "images" / "a.png", _rgb(11))
    (root / "images" / "dirloop").symlink_to(".")
    report = _prepare(tmp_path, "line", {"layout": "folder", "root": str(root)})
    (link,) = _kinds(report, "folder_link")
    assert link.path == str(root / "images" / "dirloop")
    assert list(_manifest(tmp_path, "line").index) == ["line/images/a"]
    assert set(report.counts) == {"line"}  # no category "dirloop"


# --- publisher rules: KSDD2 > 0, VisA defect types, MTD tiny defects, MVTec {0,1} ---------


def test_ksdd2_counts_any_non_zero_pixel_as_defect(tmp_path):
    root = tmp_path / "ksdd2"
    for split, number in (("train", 10), ("test", 20)):
        for offset, mask in enumerate((_square(60), np.zeros((H, W), np.uint8))):
            _png(root / split / f"{number + offset}.png", _rgb(number + offset))
            _png(root / split / f"{number + offset}_GT.png", mask)
    report = _prepare(tmp_path, "ksdd2", {"layout": "ksdd2", "root": str(root)})
    manifest = _manifest(tmp_path, "ksdd2")
    # A faint (60) annotation is a defect for KSDD2's authors (> 0), not for > 128.
    assert manifest.loc["ksdd2/train/10", "label"] == "defect"
    assert manifest.loc["ksdd2/test/21", "label"] == "normal"
    assert report.totals()["in_manifest_defect"] == 2


def _visa_root(root: Path, with_anno: bool) -> None:
    rows = ["object,split,label,image,mask"]
    anno = ["image,label,mask"]
    base = "pcb9/Data"
    for i in range(2):
        image = f"{base}/Images/Normal/{i:04d}.JPG"
        _png(root / image, _rgb(30 + i), format="JPEG")
        rows.append(f"pcb9,{'train' if i == 0 else 'test'},normal,{image},")
        anno.append(f"{image},normal,")
    labels = ['"melt, scratch"', "bent", '"Scratch,melt"', "bent"]
    for i, label in enumerate(labels):
        image, mask = f"{base}/Images/Anomaly/{i:03d}.JPG", f"{base}/Masks/Anomaly/{i:03d}.png"
        _png(root / image, _rgb(40 + i), format="JPEG")
        _png(root / mask, _square(1 + i % 2))
        rows.append(f"pcb9,test,anomaly,{image},{mask}")
        anno.append(f"{image},{label},{mask}")
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    if with_anno:
        (root / "pcb9" / "image_anno.csv").write_text("\n".join(anno) + "\n")


def test_visa_defect_types_come_from_image_anno(tmp_path):
    root = tmp_path / "visa"
    _visa_root(root, with_anno=True)
    report = _prepare(tmp_path, "visa", {"layout": "visa", "root": str(root)})
    manifest = _manifest(tmp_path, "visa")
    types = dict(manifest["defect_type"])
    assert types["visa/pcb9/Data/Images/Anomaly/000"] == "melt+scratch"
    assert types["visa/pcb9/Data/Images/Anomaly/002"] == "melt+scratch"  # order written: same
    assert types["visa/pcb9/Data/Images/Anomaly/001"] == "bent"
    assert set(report.counts["pcb9"]) == {"good", "bent", "melt+scratch"}
    assert not _kinds(report, "not_read")  # 1cls.csv and image_anno.csv are both read


def test_visa_without_image_anno_warns_and_names_the_file(tmp_path):
    root = tmp_path / "visa"
    _visa_root(root, with_anno=False)
    report = _prepare(tmp_path, "visa", {"layout": "visa", "root": str(root)})
    (missing,) = _kinds(report, "missing_image_anno")
    assert missing.path == str(root / "pcb9" / "image_anno.csv")
    assert set(_manifest(tmp_path, "visa")["defect_type"]) == {"good", "anomaly"}


def _mtd_root(root: Path, uneven: dict[str, np.ndarray]) -> None:
    for i in range(2):
        _png(root / "MT_Free" / "Imgs" / f"exp1_num_{i}.jpg", _rgb(50 + i), format="JPEG")
        _png(root / "MT_Free" / "Imgs" / f"exp1_num_{i}.png", np.zeros((H, W), np.uint8))
    for i, (stem, mask) in enumerate(uneven.items()):
        _png(root / "MT_Uneven" / "Imgs" / f"{stem}.jpg", _rgb(60 + i), format="JPEG")
        _png(root / "MT_Uneven" / "Imgs" / f"{stem}.png", mask)


def test_mtd_defects_under_the_minimum_size_are_excluded_and_counted(tmp_path):
    one_pixel = np.zeros((H, W), np.uint8)
    one_pixel[3, 3] = 200
    one_pixel[4:8, 4:8] = 60  # a faint halo, as exp3_num_24829 has: 17 non-zero, 1 above 128
    root = tmp_path / "mtd"
    _mtd_root(root, {"exp3_num_1": one_pixel, "exp3_num_2": _square(), "exp3_num_3": _square()})
    report = _prepare(tmp_path, "mtd", {"layout": "mtd", "root": str(root)})
    (tiny,) = _kinds(report, "tiny_defect")
    assert tiny.path.endswith("exp3_num_1.png") and "1 foreground pixel" in tiny.reason
    assert "data.min_defect_pixels (10)" in tiny.reason
    assert report.counts["MT_Uneven"]["uneven"]["in_manifest"] == 2
    lowered = _prepare(tmp_path, "mtd", {"layout": "mtd", "root": str(root)}, min_defect_pixels=1)
    assert lowered.counts["MT_Uneven"]["uneven"]["in_manifest"] == 3
    # MT_Free's all-background masks are set aside in one line, not listed 1 by 1 as unread.
    (normal,) = _kinds(report, "normal_masks")
    assert "2 masks" in normal.reason and not _kinds(report, "not_read")


def test_mvtec_zero_one_mask_is_named_as_a_convention_problem(tmp_path):
    root = tmp_path / "mvtec"
    _png(root / "bottle" / "train" / "good" / "000.png", _rgb(70))
    _png(root / "bottle" / "test" / "crack" / "000.png", _rgb(71))
    _png(root / "bottle" / "ground_truth" / "crack" / "000_mask.png", _square(1))
    report = _prepare(tmp_path, "mvtec", {"layout": "mvtec", "root": str(root)})
    (below,) = _kinds(report, "mask_below_threshold")
    assert below.action == "excluded" and "largest value 1" in below.reason


# --- every file a layout does not read is reported ----------------------------------------


def test_files_and_folders_a_layout_does_not_read_are_listed(tmp_path):
    root = tmp_path / "mvtec"
    _png(root / "bottle" / "train" / "good" / "000.png", _rgb(80))
    _png(root / "bottle" / "test" / "crack" / "000.png", _rgb(81))
    _png(root / "bottle" / "ground_truth" / "crack" / "000_mask.png", _square())
    (root / "readme.txt").write_text("MVTec AD\n")
    (root / "license.txt").write_text("CC BY-NC-SA 4.0\n")
    (root / "bottle" / "notes.md").write_text("x\n")
    (root / "extras" / "figures").mkdir(parents=True)
    for name in ("a.pdf", "b.pdf"):
        (root / "extras" / "figures" / name).write_text("x")
    (root / ".DS_Store").write_text("x")  # hidden: not listed
    report = _prepare(tmp_path, "mvtec", {"layout": "mvtec", "root": str(root)})
    listed = {issue.path: issue.reason for issue in _kinds(report, "not_read")}
    assert set(listed) == {
        str(root / "readme.txt"),
        str(root / "license.txt"),
        str(root / "bottle" / "notes.md"),
    }
    # A folder with nothing the layout reads is its own report line (stray_folder, once).
    strays = [i.path for i in _kinds(report, "stray_folder")]
    assert strays == [str(root / "extras")]
