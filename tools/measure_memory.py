"""Peak memory of one training step per method, and image-encoder throughput (issue #17).

For every (backbone, method, precision, checkpointing) it builds the method (random weights:
memory and time do not depend on them), runs one training step (forward under autocast, fp32
loss, backward, Adam) on one image at the backbone's input size and records the peak memory of
that step: CUDA ``max_memory_allocated`` after a reset on a GPU, the process's peak RSS on a CPU
(which cannot be reset, so on a CPU only the first configuration's figure is that step's own;
run one configuration per process there). Then it times the image encoder's forward (inference,
batch 1 and 4) and counts its FLOPs with torch's FlopCounterMode, giving TFLOP/s and the share
of ``--peak-tflops`` (the GPU's dense bf16 peak; H100/H200 SXM: 989).

    python tools/measure_memory.py --device cuda --backbones vit_b vit_h --out work/memory
    python tools/measure_memory.py --device cpu --backbones tiny --out /tmp/m   # a smoke run

Writes ``memory.csv``, ``throughput.csv`` and ``memory.md`` under ``--out``. A configuration
that runs out of memory is recorded as ``OOM`` and the run goes on.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from spt.harness.compute import autocast, grad_scaler, peak_memory, reset_peak_memory
from spt.harness.method import TrainingSample, build_method
from spt.harness.prompts import build_prompt
from spt.sam import get_spec
from spt.sam.checkpointing import checkpoint_encoder_blocks

METHODS = ("spt", "lora", "adapter", "wesam")
GIB = 1024**3


def sample(backbone: str, device: torch.device) -> TrainingSample:
    spec = get_spec(backbone)
    size = spec.image_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[size // 3 : size * 2 // 3, size // 4 : size * 3 // 4] = 255
    planes = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)
    return TrainingSample(
        image_id="measure/0",
        image=(planes - 120.0) / 58.0,
        image_uint8=image,
        target=torch.from_numpy(mask / 255)[None, None].float().to(device),
        prompt=build_prompt("box", mask, 0, "measure/0", spec.low_res_size),
        key=7,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(backbone, method_name, precision, checkpointed, device) -> dict:
    """Peak memory and wall time of one training step (after one warm-up step)."""
    method = build_method(method_name, backbone, device=device)
    blocks = checkpoint_encoder_blocks(method.network, checkpointed)
    method.network.train()
    optimizer = torch.optim.Adam(list(method.trainable_parameters()), lr=1e-5)
    scaler = grad_scaler(device, precision)
    item = sample(backbone, device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = method.training_losses([item])["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    step()  # warm-up: optimizer state allocated, kernels chosen
    _sync(device)
    reset_peak_memory(device)
    start = time.perf_counter()
    loss = step()
    _sync(device)
    seconds = time.perf_counter() - start
    memory = peak_memory(device)
    method = optimizer = None  # freed before the next configuration's peak
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "backbone": backbone, "method": method_name, "precision": precision,
        "checkpoint_encoder": checkpointed and blocks > 0, "step_seconds": round(seconds, 4),
        "peak_gib": round(memory["peak_memory_bytes"] / GIB, 3),
        "memory_kind": memory["peak_memory_kind"], "loss": round(float(loss.detach()), 5),
    }  # fmt: skip


def encoder_throughput(backbone, precision, batch, device, peak_tflops, rounds) -> dict:
    method = build_method("zero_shot", backbone, device=device)
    encoder = method.sam.image_encoder.eval()
    size = get_spec(backbone).image_size
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.inference_mode():  # counted in fp32: the count does not depend on the dtype
        counter = FlopCounterMode(display=False)  # (and it trips over SAM's rel-pos einsum
        with counter:  # under CPU autocast)
            encoder(x)
        flops = counter.get_total_flops()
    with torch.inference_mode(), autocast(device, precision):
        encoder(x)  # warm-up
        times = []
        for _ in range(rounds):
            _sync(device)
            start = time.perf_counter()
            encoder(x)
            _sync(device)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tflops = flops / seconds / 1e12
    return {
        "backbone": backbone, "precision": precision, "batch": batch,
        "images_per_s": round(batch / seconds, 3), "gflop_per_image": round(flops / batch / 1e9, 3),
        "tflops": round(tflops, 4),
        "share_of_peak": round(tflops / peak_tflops, 4) if peak_tflops else "",
    }  # fmt: skip


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbones", nargs="+", default=["vit_b", "vit_h"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--rounds", type=int, default=5, help="timed encoder forwards")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak")
    parser.add_argument("--out", default="work/memory")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    memory_rows, throughput_rows = [], []
    for backbone in args.backbones:
        for method in args.methods:
            for precision in args.precisions:
                for checkpointed in (False, True):
                    try:
                        row = training_step(backbone, method, precision, checkpointed, device)
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        row = {"backbone": backbone, "method": method, "precision": precision,
                               "checkpoint_encoder": checkpointed, "step_seconds": "",
                               "peak_gib": "OOM", "memory_kind": "", "loss": ""}  # fmt: skip
                    memory_rows.append(row)
                    print(row, flush=True)
                    _write_csv(out / "memory.csv", memory_rows)  # kept if a later one dies
        for precision in args.precisions:
            for batch in args.batches:
                try:
                    row = encoder_throughput(
                        backbone, precision, batch, device, args.peak_tflops, args.rounds
                    )
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    continue
                throughput_rows.append(row)
                print(row, flush=True)
                _write_csv(out / "throughput.csv", throughput_rows)
    lines = [
        "| backbone | method | precision | checkpointed | peak GiB | step s |",
        "|---" * 6 + "|",
    ]
    for row in memory_rows:
        lines.append(
            f"| {row['backbone']} | {row['method']} | {row['precision']} | "
            f"{row['checkpoint_encoder']} | {row['peak_gib']} | {row['step_seconds']} |"
        )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    (out / "memory.md").write_text(f"# One training step, {name}\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
