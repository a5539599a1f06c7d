"""A short pretrain + train + evaluate in ONE process, then the hashes of what it produced.

Run by tests/test_cross_cpu.py natively and under CPU emulation (qemu-user): in portable
numerics the hashes must be equal. One process because starting Python with torch under the
emulator takes about half a minute. It calls the `spt` commands in-process (``spt.cli.main``),
so it exercises the code paths the pipeline runs.

    python tests/crosscpu/short_pipeline.py OUT_DIR   # writes OUT_DIR/hashes.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import spt  # noqa: F401  (first: pins the numerics)

PARAMS = """\
data:
  seed: 0
  train_fraction: 0.5
  workers: 1
  synthetic: {normal_train: 1, normal_test: 1, defects_per_type: 2}
pretrain:
  scenes: 16
  epochs: 1
  batch_size: 8
  lr: 0.002
  warmup_steps: 1
  lr_step_epochs: 12
  lr_gamma: 0.1
  grad_clip: 1.0
  weight_decay: 0.0
  seed: 0
  init_seed: 0
  prompt_modes: [box, points-1, coarse]
  loss_points: 256
  iou_loss_weight: 1.0
  heldout_scenes: 4
  industrial_probe_images: 4
  probe_modes: [box]
train:
  epochs: 1
  batch_size: 1
  lr: 0.001
  seed: 0
evaluate:
  prompt_modes: [box, points-1, coarse]
  seed: 0
analyses:
  robustness:
    box_shift: [0.2]
    box_scale: [0.3]
    box_hqsam: [1.0]
    point_counts: [2]
    click_px: [64.0]
    coarse_tolerance: [0.2]
    severities: [3]
"""


TIMING_COLUMNS = {"seconds", "encode_seconds"}


def arrays_digest(path: Path) -> str:
    """sha256 over every array of an .npz (the evaluation's example masks and logits)."""
    import numpy as np

    digest = hashlib.sha256()
    with np.load(path, allow_pickle=False) as arrays:
        for name in sorted(arrays.files):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def tensor_digest(path: Path) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (not the file's bytes)."""
    import torch

    def walk(obj, prefix, digest):
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            digest.update(f"{prefix}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            for key in sorted(obj, key=str):
                walk(obj[key], f"{prefix}/{key}", digest)
        elif isinstance(obj, list | tuple):
            for i, item in enumerate(obj):
                walk(item, f"{prefix}/{i}", digest)

    digest = hashlib.sha256()
    walk(torch.load(path, map_location="cpu", weights_only=True), "", digest)
    return digest.hexdigest()


def records_digest(path: Path) -> str:
    """sha256 over the records' columns in a fixed row order; the wall-clock timings (which
    no two runs share) are left out."""
    import pandas as pd

    frame = pd.read_parquet(path)
    keys = [c for c in ("dataset", "image_id", "prompt_mode", "stage") if c in frame.columns]
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    digest = hashlib.sha256()
    for column in sorted(set(frame.columns) - TIMING_COLUMNS):
        digest.update(column.encode())
        digest.update(pd.util.hash_pandas_object(frame[column], index=False).values.tobytes())
    return digest.hexdigest()


def corruptions_digest() -> str:
    """sha256 over every corruption x severity 1..5 of one textured image (the float and
    integer paths of spt.harness.corruptions, at sizes where every blur radius differs)."""
    import numpy as np

    from spt.harness.corruptions import CORRUPTIONS, MAX_SEVERITY, corrupt

    ys, xs = np.mgrid[0:200, 0:240]
    image = np.stack([(xs * 255) // 239, (ys * 255) // 199, ((xs // 12 + ys // 12) % 2) * 200], -1)
    image = image.astype(np.uint8)
    digest = hashlib.sha256()
    for name in CORRUPTIONS:
        for severity in range(1, MAX_SEVERITY + 1):
            digest.update(corrupt(image, name, severity, seed=0, image_id="probe").tobytes())
    return digest.hexdigest()


def main(out: Path) -> int:
    from spt import numerics
    from spt.cli import main as run_spt

    out.mkdir(parents=True, exist_ok=True)
    params = out / "params.yaml"
    params.write_text(PARAMS)
    steps = [
        ["prepare", "--params", str(params), "--synthetic", str(out / "synthetic"),
         "--out", str(out / "prepared"), "--datasets", "mvtec_twin", "ksdd2_twin"],
        ["pretrain", "--params", str(params), "--out", str(out / "pretrain"), "--no-progress"],
        ["train", "--params", str(params), "--method", "spt", "--backbone", "tiny",
         "--checkpoint", str(out / "pretrain" / "tiny_sam.pth"),
         "--prepared-root", str(out / "prepared"), "--datasets", "mvtec_twin",
         "--limit", "3", "--out", str(out / "train"), "--restart", "--no-progress"],
    ]  # fmt: skip
    for argv in steps:
        if run_spt(argv) != 0:
            print(f"spt {' '.join(argv)} failed", file=sys.stderr)
            return 1
    trained = next((out / "train").rglob("trained.pt"))
    evaluate = [
        "evaluate", "--params", str(params), "--method", "spt", "--backbone", "tiny",
        "--checkpoint", str(out / "pretrain" / "tiny_sam.pth"), "--trained", str(trained),
        "--prepared-root", str(out / "prepared"), "--datasets", "mvtec_twin", "ksdd2_twin",
        "--limit", "2", "--out", str(out / "eval"), "--no-progress",
    ]  # fmt: skip
    if run_spt(evaluate) != 0:
        return 1
    robustness = [
        "robustness", "--params", str(params), "--method", "spt", "--backbone", "tiny",
        "--checkpoint", str(out / "pretrain" / "tiny_sam.pth"), "--trained", str(trained),
        "--prepared-root", str(out / "prepared"), "--datasets", "mvtec_twin",
        "--limit", "2", "--out", str(out / "robust"), "--no-progress",
    ]  # fmt: skip
    if run_spt(robustness) != 0:
        return 1
    robust = hashlib.sha256()
    for path in sorted((out / "robust").rglob("records.parquet")):
        if "parts" not in path.parts:
            robust.update(path.parent.relative_to(out).as_posix().encode())
            robust.update(records_digest(path).encode())
    records = next((out / "eval").rglob("records.parquet"))
    masks = sorted((out / "prepared").rglob("*.png"))
    hashes = {
        "numerics": numerics.describe(),
        "prepared_masks": hashlib.sha256(b"".join(p.read_bytes() for p in masks)).hexdigest(),
        "tiny_sam": tensor_digest(out / "pretrain" / "tiny_sam.pth"),
        "trained": tensor_digest(trained),
        "records": records_digest(records),
        "examples": arrays_digest(records.parent / "examples.npz"),
        "robustness": robust.hexdigest(),
        "corruptions": corruptions_digest(),
    }
    (out / "hashes.json").write_text(json.dumps(hashes, indent=1))
    print(json.dumps({k: v for k, v in hashes.items() if k != "numerics"}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
