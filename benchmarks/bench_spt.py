"""SPT inference per image-prompt against zero-shot SAM on the same backbone, in one run.

Both sides take the same raw image and box: normalise + pad, encode, embed the prompt, decode.
SPT adds the relation, the LoRA updates and a second decoder pass. pytest-benchmark times SPT;
the same test times zero-shot SAM (segment_anything's modules directly, no SPT code) and SPT again,
interleaved, so both see the same machine load, and stores the ratio of the medians in
``extra_info["spt_over_sam"]``. With ``--benchmark-disable`` each side runs only a few times.

Backbones: ``tiny`` by default; set ``SPT_BENCH_BACKBONES=tiny,vit_b`` to add published ones
(random weights: timing does not depend on them; vit_b takes seconds per image on a CPU).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from spt.model import SPTConfig, build_spt
from spt.sam import build_sam, get_spec

BACKBONES = os.environ.get("SPT_BENCH_BACKBONES", "tiny").split(",")


@pytest.fixture(scope="module", params=BACKBONES)
def setup(request):
    backbone = request.param
    size = get_spec(backbone).image_size
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    box = torch.tensor([[0.15, 0.25, 0.7, 0.8]]) * size
    sam = build_sam(backbone, seed=0)
    spt = build_spt(backbone, SPTConfig(), seed=0)
    # Non-zero adapters, so SPT does its full work rather than SAM's arithmetic plus zeros.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, param in spt.named_trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return backbone, image, box, sam, spt


def spt_predict(spt, image, box):
    with torch.no_grad():
        return spt(spt.preprocess(image)[None], boxes=box).final_logits


def sam_predict(sam, image, box):
    with torch.no_grad():
        embedding = sam.image_encoder(sam.preprocess(image)[None])
        sparse, dense = sam.prompt_encoder(points=None, boxes=box, masks=None)
        logits, _ = sam.mask_decoder(
            embedding, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False
        )
        return logits


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@pytest.mark.benchmark(group="spt-vs-sam")
def test_spt_inference_vs_zero_shot_sam(benchmark, setup):
    backbone, image, box, sam, spt = setup
    logits = benchmark(spt_predict, spt, image, box)
    assert logits.shape == sam_predict(sam, image, box).shape

    rounds = 3 if benchmark.disabled else (50 if backbone == "tiny" else 5)
    spt_times, sam_times = [], []
    for _ in range(rounds):
        spt_times.append(_seconds(spt_predict, spt, image, box))
        sam_times.append(_seconds(sam_predict, sam, image, box))
    spt_median, sam_median = statistics.median(spt_times), statistics.median(sam_times)
    benchmark.extra_info.update(
        backbone=backbone,
        prompt="box",
        rounds=rounds,
        spt_median_s=spt_median,
        sam_median_s=sam_median,
        spt_over_sam=spt_median / sam_median,
    )
    if not benchmark.disabled:
        # SPT does everything SAM does and more; a ratio below 1 means a broken measurement.
        assert spt_median / sam_median > 1.0
