"""Synthetic twins: miniature copies of every native layout, true to file names, extensions
and mask conventions, with procedural defects on textured surfaces.

Each twin is a pure function of (seed, sizes): rerunning writes byte-identical files. Tests,
``spt synth`` and ``spt prepare --synthetic`` use them; a later stage can ask for more images
per category (:class:`TwinSize`) to get a small training set.

Conventions reproduced: MVTec AD / MPDD ``ground_truth/<defect>/<stem>_mask.png`` (0/255);
MVTec AD 2's ``train/good``, ``validation/good``, ``test_public/{good,bad}`` with
``test_public/ground_truth/bad/<stem>_mask.png`` and unlabelled ``test_private*/`` images;
VisA ``.JPG`` images, class-id masks (1, 2) and ``split_csv/1cls.csv``; BTAD's per-product
formats (01 bmp/png, 02 png/png, 03 bmp/bmp); KSDD2 ``<id>_GT.png`` beside every image, defect
images on both sides of the publisher's split; MTD ``.jpg`` + same-stem non-binary ``.png``
masks, including an all-zero MT_Uneven mask on a defect image (as 4 real ones are); the SPT
archive's ``<subset>/{train,test}/*.jpg`` + ``.png``; a folder of images + ``_mask`` masks.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from spt.artifacts import publish_folder
from spt.data.config import NATIVE_CONVENTION, DataConfig, DatasetConfig, check_seed
from spt.data.stable_random import stable_rng
from spt.data.synthetic_draw import apply_defect, colourise, defect_mask, texture
from spt.errors import SuiteError

MARKER = ".spt_synthetic"  # written in every twin root; only such folders are ever replaced
# New layouts go at the end: the twins are written in this order and earlier ones feed a
# committed metric reference.
TWIN_LAYOUTS = (
    "mvtec",
    "visa",
    "mpdd",
    "btad",
    "ksdd2",
    "mtd",
    "spt_archive",
    "folder",
    "mvtec_ad2",
)
FOLDER_OPTIONS = {"images": "images", "masks": "masks", "mask_suffix": "_mask"}


@dataclass(frozen=True)
class TwinSize:
    """Images per category: normal train / normal test, and defect images per defect type."""

    normal_train: int = 3
    normal_test: int = 2
    defects_per_type: int = 3

    def __post_init__(self) -> None:
        # Name both places a size comes from: `spt synth` flags, data.synthetic in params.
        for name, least in (("normal_train", 1), ("normal_test", 1), ("defects_per_type", 2)):
            value = getattr(self, name)
            if value < least:
                raise SuiteError(
                    f"synthetic sizes: {name} is {value}, need >= {least} (a twin needs normal "
                    "train and test images and defect images on both sides of the split); set "
                    f"--{name.replace('_', '-')} (spt synth) or data.synthetic.{name} "
                    "(spt prepare --synthetic)"
                )


@dataclass(frozen=True)
class Product:
    texture: str
    rgb: bool
    defects: dict[str, str]  # publisher's defect type -> procedural defect drawn
    shape: tuple[int, int]  # height, width


MVTEC_PRODUCTS = {
    "bottle": Product(
        "noise", True, {"broken_large": "missing", "contamination": "blob"}, (96, 96)
    ),
    "carpet": Product("weave", True, {"color": "stain", "cut": "scratch"}, (112, 112)),
    "grid": Product("stripes", False, {"broken": "missing", "thread": "crack"}, (96, 96)),
}
MPDD_PRODUCTS = {
    "bracket_black": Product("grain", True, {"hole": "blob", "scratches": "scratch"}, (80, 128)),
    "metal_plate": Product(
        "grain", True, {"major_rust": "stain", "scratches": "scratch"}, (96, 96)
    ),
    "tubes": Product("stripes", True, {"anomalous": "crack"}, (72, 144)),
}
# MVTec AD 2 names no defect types: every public defect image is "bad".
MVTEC_AD2_PRODUCTS = {
    "can": Product("grain", True, {"bad": "scratch"}, (80, 120)),
    "walnuts": Product("noise", True, {"bad": "blob"}, (96, 96)),
}
VISA_PRODUCTS = {
    "candle": Product("noise", True, {"1": "blob", "2": "stain"}, (96, 128)),
    "pcb1": Product("weave", True, {"1": "scratch", "2": "missing"}, (104, 136)),
}
# VisA's per-category image_anno.csv names each anomaly's defect; the twin's, per class id.
VISA_LABELS = {
    "candle": {"1": "extra wax", "2": "different colour spot"},
    "pcb1": {"1": "scratch", "2": "missing"},
}
# BTAD products: (texture, rgb, image suffix, mask suffix, shape)
BTAD_PRODUCTS = {
    "01": ("weave", True, ".bmp", ".png", (96, 96)),
    "02": ("grain", True, ".png", ".png", (80, 120)),
    "03": ("noise", False, ".bmp", ".bmp", (112, 80)),
}
MTD_CLASSES = {
    "Blowhole": "blob",
    "Break": "missing",
    "Crack": "crack",
    "Fray": "scratch",
    "Uneven": "stain",
}


def _sample(
    seed: int,
    key: str,
    product: Product,
    defect: str | None,
    shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One uint8 image (grey or RGB) and its boolean defect mask (None for a normal image)."""
    rng = stable_rng(seed, key)
    height, width = shape or product.shape
    surface = texture(product.texture, height, width, rng)
    image = colourise(surface, rng) if product.rgb else surface
    mask = None
    if defect is not None:
        mask = defect_mask(defect, height, width, rng)
        image = apply_defect(image, mask, defect, rng)
    return np.rint(image).astype(np.uint8), mask


def _encode(array: np.ndarray, suffix: str) -> bytes:
    """Encoded bytes with fixed settings, so reruns write identical files."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP"}[suffix.lower()]
    options = {"quality": 92, "subsampling": 0} if fmt == "JPEG" else {}
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encode(array, path.suffix))


def _binary(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 255, 0).astype(np.uint8)


def _write_mvtec(root: Path, seed: int, size: TwinSize, layout: str) -> None:
    products = MVTEC_PRODUCTS if layout == "mvtec" else MPDD_PRODUCTS
    (root / "readme.txt").write_text(f"synthetic twin of the {layout} layout (spt synth)\n")
    for category, product in products.items():
        base = root / category
        for split, count in (("train", size.normal_train), ("test", size.normal_test)):
            for i in range(count):
                image, _ = _sample(seed, f"{layout}/{category}/{split}/good/{i}", product, None)
                _save(base / split / "good" / f"{i:03d}.png", image)
        for defect_type, kind in product.defects.items():
            for i in range(size.defects_per_type):
                image, mask = _sample(seed, f"{layout}/{category}/{defect_type}/{i}", product, kind)
                _save(base / "test" / defect_type / f"{i:03d}.png", image)
                _save(base / "ground_truth" / defect_type / f"{i:03d}_mask.png", _binary(mask))


def _write_mvtec_ad2(root: Path, seed: int, size: TwinSize) -> None:
    """Real names are ``<number>_<lighting>.png`` (``000_regular.png``); the twin uses the
    ``regular`` lighting throughout. The private test sets get images but, as shipped, no masks:
    every other one is defective, so only the missing ground truth keeps them out of a manifest."""
    for category, product in MVTEC_AD2_PRODUCTS.items():
        base = root / category
        ((defect_type, kind),) = product.defects.items()
        normals = (
            ("train/good", size.normal_train),
            ("validation/good", size.normal_test),
            ("test_public/good", size.normal_test),
        )
        for folder, count in normals:
            for i in range(count):
                image, _ = _sample(seed, f"mvtec_ad2/{category}/{folder}/{i}", product, None)
                _save(base / folder / f"{i:03d}_regular.png", image)
        for i in range(size.defects_per_type):
            image, mask = _sample(seed, f"mvtec_ad2/{category}/{defect_type}/{i}", product, kind)
            name = f"{i:03d}_regular"
            _save(base / "test_public" / defect_type / f"{name}.png", image)
            _save(
                base / "test_public" / "ground_truth" / defect_type / f"{name}_mask.png",
                _binary(mask),
            )
        for folder in ("test_private", "test_private_mixed"):
            for i in range(size.normal_test + 1):
                drawn = kind if i % 2 else None
                image, _ = _sample(seed, f"mvtec_ad2/{category}/{folder}/{i}", product, drawn)
                _save(base / folder / f"{i:03d}_regular.png", image)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_visa(root: Path, seed: int, size: TwinSize) -> None:
    rows = []
    for category, product in VISA_PRODUCTS.items():
        data = root / category / "Data"
        labels = []  # image_anno.csv: image, label, mask
        for i in range(size.normal_train + size.normal_test):
            image, _ = _sample(seed, f"visa/{category}/normal/{i}", product, None)
            path = data / "Images" / "Normal" / f"{i:04d}.JPG"
            _save(path, image)
            split = "train" if i < size.normal_train else "test"
            rows.append([category, split, "normal", path.relative_to(root).as_posix(), ""])
            labels.append([path.relative_to(root).as_posix(), "normal", ""])
        number = 0
        for class_id, kind in product.defects.items():
            for _ in range(size.defects_per_type):
                image, mask = _sample(seed, f"visa/{category}/anomaly/{number}", product, kind)
                path = data / "Images" / "Anomaly" / f"{number:03d}.JPG"
                mask_path = data / "Masks" / "Anomaly" / f"{number:03d}.png"
                _save(path, image)
                _save(mask_path, np.where(mask, int(class_id), 0).astype(np.uint8))
                labels.append(
                    [
                        path.relative_to(root).as_posix(),
                        VISA_LABELS[category][class_id],
                        mask_path.relative_to(root).as_posix(),
                    ]
                )
                rows.append(
                    [
                        category,
                        "test",  # VisA puts every anomalous image in test
                        "anomaly",
                        path.relative_to(root).as_posix(),
                        mask_path.relative_to(root).as_posix(),
                    ]
                )
                number += 1
        _write_csv(root / category / "image_anno.csv", ["image", "label", "mask"], labels)
    _write_csv(root / "split_csv" / "1cls.csv", ["object", "split", "label", "image", "mask"], rows)


def _write_btad(root: Path, seed: int, size: TwinSize) -> None:
    for category, (kind, rgb, image_suffix, mask_suffix, shape) in BTAD_PRODUCTS.items():
        product = Product(kind, rgb, {"ko": "blob"}, shape)
        base = root / category
        for split, count in (("train", size.normal_train), ("test", size.normal_test)):
            for i in range(count):
                image, _ = _sample(seed, f"btad/{category}/{split}/ok/{i}", product, None)
                _save(base / split / "ok" / f"{i:04d}{image_suffix}", image)
        for i in range(2 * size.defects_per_type):
            defect = ("blob", "scratch")[i % 2]
            image, mask = _sample(seed, f"btad/{category}/ko/{i}", product, defect)
            _save(base / "test" / "ko" / f"{i:04d}{image_suffix}", image)
            _save(base / "ground_truth" / "ko" / f"{i:04d}{mask_suffix}", _binary(mask))


def _write_ksdd2(root: Path, seed: int, size: TwinSize) -> None:
    product = Product("grain", True, {}, (128, 64))
    number = 10000
    for split, normals in (("train", size.normal_train), ("test", size.normal_test)):
        kinds = [None] * normals + ["scratch", "stain"] * size.defects_per_type
        for kind in kinds:
            image, mask = _sample(seed, f"ksdd2/{number}", product, kind)
            mask = np.zeros(image.shape[:2], bool) if mask is None else mask
            _save(root / split / f"{number}.png", image)
            _save(root / split / f"{number}_GT.png", _binary(mask))
            number += 1


def _soft_mask(mask: np.ndarray, rng: np.random.Generator, peak: int = 255) -> np.ndarray:
    """MTD-style annotation: blurred edges, so values between 0 and ``peak``."""
    soft = cv2.GaussianBlur(mask.astype(np.float32) * peak, (0, 0), rng.uniform(0.8, 1.5))
    soft[mask] = peak  # the drawn shape keeps full strength; only its halo is graded
    return np.rint(soft).astype(np.uint8)


def _write_mtd(root: Path, seed: int, size: TwinSize) -> None:
    classes = {**{f"MT_{name}": kind for name, kind in MTD_CLASSES.items()}, "MT_Free": None}
    for offset, (folder, kind) in enumerate(sorted(classes.items())):
        count = size.normal_train + size.normal_test if kind is None else size.defects_per_type
        for i in range(count):
            key = f"mtd/{folder}/{i}"
            rng = stable_rng(seed, key, "shape")
            shape = (int(rng.integers(8, 20)) * 8, int(rng.integers(8, 20)) * 8)
            image, mask = _sample(seed, key, Product("noise", False, {}, shape), kind, shape)
            stem = f"exp{i % 5}_num_{1000 * (offset + 1) + 37 * i}"
            if mask is None:
                raw = np.zeros(shape, np.uint8)
            elif folder == "MT_Uneven" and i == 0:
                raw = np.zeros(shape, np.uint8)  # all zero on a defect image, like 4 real ones
            else:
                raw = _soft_mask(mask, rng)
            _save(root / folder / "Imgs" / f"{stem}.jpg", image)
            _save(root / folder / "Imgs" / f"{stem}.png", raw)


def _write_spt_archive(root: Path, seed: int, size: TwinSize) -> None:
    subsets = {"mvtec": MVTEC_PRODUCTS["bottle"], "visa": VISA_PRODUCTS["candle"]}
    for subset, product in subsets.items():
        for split in ("train", "test"):
            kinds = ["blob", "scratch"] * size.defects_per_type + [None] * size.normal_test
            for i, kind in enumerate(kinds):
                image, mask = _sample(seed, f"spt_archive/{subset}/{split}/{i}", product, kind)
                mask = np.zeros(image.shape[:2], bool) if mask is None else mask
                _save(root / subset / split / f"{subset}_{i:04d}.jpg", image)
                _save(root / subset / split / f"{subset}_{i:04d}.png", _binary(mask))


def _write_folder(root: Path, seed: int, size: TwinSize) -> None:
    product = Product("stripes", True, {}, (88, 120))
    kinds = [None] * (size.normal_train + size.normal_test) + [
        "crack",
        "blob",
    ] * size.defects_per_type
    for i, kind in enumerate(kinds):
        image, mask = _sample(seed, f"folder/{i}", product, kind)
        _save(root / "images" / f"part_{i:03d}.png", image)
        if mask is not None:
            _save(root / "masks" / f"part_{i:03d}_mask.png", _binary(mask))


def write_twin(layout: str, root: Path, seed: int = 0, size: TwinSize = TwinSize()) -> Path:
    """Write the twin of ``layout`` at ``root`` (replacing an earlier twin, nothing else).

    The twin is written into a hidden sibling folder ``.<name>.partial`` and renamed onto
    ``root`` when complete, so a killed run leaves the earlier twin (or nothing) at ``root``,
    never half a twin; the next run clears the partial folder, which holds only twin files."""
    if layout not in TWIN_LAYOUTS:
        raise SuiteError(f"no synthetic twin for layout {layout!r}; use one of {TWIN_LAYOUTS}")
    # The seed is hashed as text: "abc" would quietly write other data than prepare accepts.
    check_seed(seed, "data.seed (or spt synth --seed)")
    root = Path(root)
    if root.exists():
        if not (root / MARKER).is_file():
            if any(root.iterdir()):
                raise SuiteError(
                    f"{root}: not empty and not a synthetic twin; choose an empty output folder"
                )
        else:
            _check_only_twin_files(root)
    staging = root.parent / f".{root.name}.partial"
    if staging.exists():
        if not (staging / MARKER).is_file():
            raise SuiteError(
                f"{staging}: exists and is not an unfinished twin; move it away and rerun"
            )
        shutil.rmtree(staging)  # an earlier run killed part way: only twin files inside
    staging.mkdir(parents=True)
    (staging / MARKER).write_text(f"seed {seed} {size} (unfinished)\n")
    if layout in ("mvtec", "mpdd"):
        _write_mvtec(staging, seed, size, layout)
    else:
        writer = {
            "visa": _write_visa,
            "btad": _write_btad,
            "ksdd2": _write_ksdd2,
            "mtd": _write_mtd,
            "spt_archive": _write_spt_archive,
            "folder": _write_folder,
            "mvtec_ad2": _write_mvtec_ad2,
        }[layout]
        writer(staging, seed, size)
    written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    lines = [f"seed {seed} {size}", *(f"file {name}" for name in written if name != MARKER)]
    (staging / MARKER).write_text("\n".join(lines) + "\n")
    publish_folder(staging, root)  # over an earlier twin (checked above) or an empty folder
    return root


def _check_only_twin_files(root: Path) -> None:
    """An earlier twin is replaced only when it holds nothing but the files it wrote (listed in
    its marker): a file a user added there would be deleted without a word."""
    listed = {
        line[5:] for line in (root / MARKER).read_text().splitlines() if line.startswith("file ")
    }
    present = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )
    foreign = [name for name in present if name != MARKER and name not in listed]
    if foreign:
        raise SuiteError(
            f"{root}: holds {len(foreign)} file(s) `spt synth` did not write (e.g. {foreign[0]}); "
            "move them out, or delete the folder to rewrite the twin"
        )


def write_all_twins(out: Path, seed: int = 0, size: TwinSize = TwinSize()) -> dict[str, Path]:
    return {layout: write_twin(layout, Path(out) / layout, seed, size) for layout in TWIN_LAYOUTS}


def twin_name(layout: str) -> str:
    """The dataset name of a layout's twin (``mvtec_twin``): never the real dataset's name, so
    a table or an image id can not pass synthetic numbers off as MVTec AD's."""
    return f"{layout}_twin"


def twin_dataset_config(layout: str, root: Path) -> DatasetConfig:
    options = dict(FOLDER_OPTIONS) if layout == "folder" else {}
    return DatasetConfig(
        twin_name(layout), layout, Path(root), NATIVE_CONVENTION.get(layout, "threshold"), options
    )


def synthetic_data_config(config: DataConfig, out: Path) -> DataConfig:
    """``config`` with its datasets replaced by the twins under ``out`` (one per layout),
    named ``<layout>_twin``."""
    datasets = {
        twin_name(layout): twin_dataset_config(layout, Path(out) / layout)
        for layout in TWIN_LAYOUTS
    }
    return replace(config, datasets=datasets)
