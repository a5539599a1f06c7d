"""SAM's image encoder with torch's fused SDPA attention against SAM's own, as a ratio in one run.

The same encoder (random weights, random non-zero rel_pos so the relative-position bias does real
work) runs one image forward with segment_anything's ``Attention`` and with
:class:`spt.sam.attention.FastAttention`, switched in place between calls. pytest-benchmark times
the SDPA forward; the test also times both, interleaved so both see the same machine load, and
stores the ratio of the medians in ``extra_info["sdpa_over_sam"]`` with the largest embedding
difference. No speed-up is asserted (it depends on the machine and on the numerics mode: the
portable mode pins ATen to its plain kernels); the figure is printed and recorded.

Backbones: ``tiny`` by default; ``SPT_BENCH_BACKBONES=tiny,vit_b`` adds published ones (one vit_b
forward at 1024 px takes 10-30 s on a CPU, so vit_b runs only a few pairs).
"""

from __future__ import annotations

import math
import os
import statistics
import time

import pytest
import torch

from spt import numerics
from spt.sam import build_sam, get_spec
from spt.sam.attention import FP32_TOLERANCE, set_attention

BACKBONES = os.environ.get("SPT_BENCH_BACKBONES", "tiny").split(",")


@pytest.fixture(scope="module", params=BACKBONES)
def setup(request):
    backbone = request.param
    size = get_spec(backbone).image_size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    encoder = build_sam(backbone, seed=0).image_encoder
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if "rel_pos" in name:  # SAM zero-initialises them
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return backbone, x, encoder


def encode(encoder, kind, x):
    set_attention(encoder, kind)  # a class swap per module: negligible next to a forward
    with torch.no_grad():
        return encoder(x)


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@pytest.mark.benchmark(group="encoder-attention")
def test_encoder_sdpa_vs_sam_attention(benchmark, setup):
    backbone, x, encoder = setup
    if backbone == "tiny":
        fast = benchmark(encode, encoder, "sdpa", x)
    else:  # one round: pytest-benchmark's calibration would run a 20 s forward many times
        fast = benchmark.pedantic(encode, (encoder, "sdpa", x), rounds=1, iterations=1)
    sam = encode(encoder, "sam", x)
    max_abs = (fast - sam).abs().max().item()
    relative = max_abs / sam.abs().max().item()
    assert relative <= FP32_TOLERANCE

    rounds = 1 if benchmark.disabled else (30 if backbone == "tiny" else 3)
    sdpa_times, sam_times = [], []
    for _ in range(rounds):
        sam_times.append(_seconds(encode, encoder, "sam", x))
        sdpa_times.append(_seconds(encode, encoder, "sdpa", x))
    set_attention(encoder, "sam")
    sdpa_median, sam_median = statistics.median(sdpa_times), statistics.median(sam_times)
    ratio = sdpa_median / sam_median
    benchmark.extra_info.update(
        backbone=backbone,
        image_size=x.shape[-1],
        rounds=rounds,
        numerics=numerics.effective_mode(),
        threads=torch.get_num_threads(),
        sdpa_median_s=sdpa_median,
        sam_median_s=sam_median,
        sdpa_over_sam=ratio,
        max_abs_diff=max_abs,
        max_rel_diff=relative,
    )
    print(
        f"\n{backbone} encoder, SDPA / SAM attention: {ratio:.2f} ({sdpa_median:.3f} s / "
        f"{sam_median:.3f} s, {rounds} pairs, {torch.get_num_threads()} threads, "
        f"{numerics.effective_mode()}); max |diff| {max_abs:.2e} ({relative:.1e} of max)"
    )
    assert math.isfinite(ratio) and ratio > 0
