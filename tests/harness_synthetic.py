"""Small synthetic prepared datasets for the harness tests and benchmark.

Writes RGB images, 0/255 masks and a manifest.csv (via spt.data.manifest.write_manifest) in the
prepared layout ``<root>/<dataset>/manifest.csv``. Contents depend only on the arguments.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from spt.data.manifest import write_manifest


def defect_image(rng: np.random.Generator, height: int, width: int, kind: str):
    """(image uint8 (H,W,3), mask uint8 (H,W) 0/255) with a defect of the given kind."""
    base = rng.integers(90, 140, size=3)
    image = np.clip(base + rng.normal(0, 12, size=(height, width, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    if kind == "blob":
        center = (
            int(rng.integers(width // 4, 3 * width // 4)),
            int(rng.integers(height // 4, 3 * height // 4)),
        )
        axes = (
            int(rng.integers(width // 12, width // 5)),
            int(rng.integers(height // 12, height // 5)),
        )
        cv2.ellipse(mask, center, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
    elif kind == "two_regions":
        cv2.circle(mask, (width // 4, height // 4), max(3, width // 10), 255, -1)
        cv2.rectangle(
            mask,
            (width // 2, height // 2),
            (width // 2 + width // 6, height // 2 + height // 8),
            255,
            -1,
        )
    elif kind == "scratch":
        cv2.line(
            mask,
            (width // 8, height // 3),
            (7 * width // 8, 2 * height // 3),
            255,
            max(2, width // 40),
        )
    elif kind == "speck":  # 2x2 pixels: survives an identity resize but is too small for points-5
        mask[height // 2 : height // 2 + 2, width // 3 : width // 3 + 2] = 255
    elif kind == "vanishing":  # one pixel of a large image: below 128 after bilinear downsizing
        mask[height // 2, width // 2] = 255
    else:
        raise ValueError(kind)
    defect = mask > 0
    image[defect] = np.clip(image[defect].astype(int) - 60, 0, 255).astype(np.uint8)
    return image, mask


def write_dataset(
    root: Path,
    dataset: str,
    kinds: list[tuple[str, int, int]],
    seed: int = 0,
    extra_rows: bool = True,
) -> Path:
    """Write ``<root>/<dataset>`` with one test defect image per (kind, height, width).

    With ``extra_rows``, adds one normal test image and one train defect image, which the
    harness must not evaluate. Returns the manifest path.
    """
    folder = root / dataset
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    entries = [("test", "defect", kind, h, w) for kind, h, w in kinds]
    if extra_rows:
        entries += [("test", "normal", "good", 64, 64), ("train", "defect", "blob", 64, 64)]
    for index, (split, label, kind, height, width) in enumerate(entries):
        category = f"cat{index % 2}"
        name = f"{category}/{kind}_{index:03d}"
        image, mask = defect_image(rng, height, width, "blob" if kind == "good" else kind)
        image_path = folder / "images" / f"{index:03d}.png"
        Image.fromarray(image).save(image_path)
        mask_path = ""
        if label == "defect":
            mask_path = str(folder / "masks" / f"{index:03d}.png")
            Image.fromarray(mask).save(mask_path)
        rows.append(
            {
                "image_id": f"{dataset}/{name}",
                "dataset": dataset,
                "category": category,
                "defect_type": kind if label == "defect" else "good",
                "label": label,
                "split": split,
                "image_path": str(image_path),
                "mask_path": mask_path,
                "height": height,
                "width": width,
                "mask_pixels": int((mask > 0).sum()) if label == "defect" else 0,
                "image_sha256": "",
                "mask_sha256": "",
                "prepared_mask_sha256": "",
            }
        )
    manifest = folder / "manifest.csv"
    write_manifest(pd.DataFrame(rows), manifest)
    return manifest
