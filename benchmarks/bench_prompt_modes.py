"""Cost of evaluating every default prompt mode against evaluating ``box`` alone, in one run.

The harness encodes each image once and reuses the embedding for every prompt mode, so the extra
cost of the other modes is only their prompt building, decoder passes and scoring. This test
times, interleaved in the same session (same machine load), the per-image evaluation of a small
synthetic set (reading the files, preparing the input, encoding, prompting, decoding, scoring)
with ``box`` only and with all default modes, and stores the ratio of the medians in
``extra_info["all_over_box"]``; pytest-benchmark times the all-modes pass.

The acceptance bound is ratio <= 1.3. It needs the encoder to dominate the per-prompt cost: the
test also measures the model-only bound (encode + M decodes) / (encode + 1 decode) from the
records' own timings and stores it. On ``tiny`` one decoder pass costs about as much as the
encoder (both are ~1 ms of small ops), so that bound alone is ~4 and 1.3 is unattainable by
any harness; the bound is asserted only where the model makes it attainable (published
backbones: set ``SPT_BENCH_BACKBONES=tiny,vit_b``; vit_b takes seconds per image on a CPU).
docs/harness.md ("Cost of the prompt modes") gives the numbers and why decodes are not batched.
Everywhere, the harness's own share is asserted: ratio <= 1.3 x the model-only bound.
With ``--benchmark-disable`` each side runs once, as a quick functional check.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spt.data.images import read_mask, read_rgb
from spt.data.manifest import read_manifest
from spt.harness.evaluate import (
    EvaluationConfig,
    ImageEvaluator,
    select_images,
)
from spt.harness.method import build_method
from spt.harness.prompts import DEFAULT_PROMPT_MODES
from tests.harness_synthetic import write_dataset

BACKBONES = os.environ.get("SPT_BENCH_BACKBONES", "tiny").split(",")
MAX_RATIO = 1.3
IMAGE_SIDE = 256
KINDS = [("blob", IMAGE_SIDE, IMAGE_SIDE), ("two_regions", IMAGE_SIDE, IMAGE_SIDE)]


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("prepared")
    manifest = write_dataset(root, "bench", KINDS * 4, seed=0, extra_rows=False)
    return select_images(read_manifest(manifest))


def evaluators(backbone: str):
    method = build_method("zero_shot", backbone)
    common = dict(method="zero_shot", backbone=backbone, datasets=("bench",))
    box = ImageEvaluator(method, EvaluationConfig(**common, prompt_modes=("box",)))
    every = ImageEvaluator(method, EvaluationConfig(**common, prompt_modes=DEFAULT_PROMPT_MODES))
    return box, every


def evaluate_rows(evaluator: ImageEvaluator, rows: pd.DataFrame) -> list[dict]:
    records = []
    with torch.inference_mode():
        for _, row in rows.iterrows():
            image = read_rgb(Path(row["image_path"]))
            mask = read_mask(Path(row["mask_path"]))
            records.extend(evaluator.evaluate(row, image, mask))
    return records


def _seconds(evaluator, rows) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    records = evaluate_rows(evaluator, rows)
    return time.perf_counter() - start, records


@pytest.mark.benchmark(group="prompt-modes")
@pytest.mark.parametrize("backbone", BACKBONES)
def test_all_prompt_modes_cost_vs_box_alone(benchmark, rows, backbone):
    if backbone != "tiny":
        rows = rows.head(2)  # published backbones take seconds per image on a CPU
    box, every = evaluators(backbone)
    evaluate_rows(every, rows.head(1))  # warm-up: first calls allocate and pick kernels
    records = benchmark.pedantic(evaluate_rows, args=(every, rows), rounds=1, iterations=1)
    assert len(records) == len(rows) * len(DEFAULT_PROMPT_MODES)
    assert all(r["status"] == "ok" for r in records)

    rounds = 1 if benchmark.disabled else (7 if backbone == "tiny" else 2)
    box_times, all_times, all_records = [], [], []
    for _ in range(rounds):
        box_times.append(_seconds(box, rows)[0])
        seconds, measured = _seconds(every, rows)
        all_times.append(seconds)
        all_records.extend(measured)
    ratio = statistics.median(all_times) / statistics.median(box_times)

    # Model-only bound from the same run: one encode per image plus one decode per mode.
    frame = pd.DataFrame(all_records)
    encode = frame.drop_duplicates("image_id")["encode_seconds"].median()
    decode = frame["seconds"].median()
    modes = len(DEFAULT_PROMPT_MODES)
    model_bound = (encode + modes * decode) / (encode + decode)
    benchmark.extra_info.update(
        backbone=backbone,
        images=len(rows),
        image_side=IMAGE_SIDE,
        modes=modes,
        rounds=rounds,
        box_median_s=statistics.median(box_times),
        all_median_s=statistics.median(all_times),
        all_over_box=ratio,
        encode_median_s=float(encode),
        decode_median_s=float(decode),
        model_only_bound=float(model_bound),
        max_ratio=MAX_RATIO,
    )
    print(
        f"\n{backbone}: all {modes} modes / box = {ratio:.3f} "
        f"(encode {encode * 1e3:.2f} ms, decode {decode * 1e3:.2f} ms per prompt, "
        f"model-only bound {model_bound:.2f})"
    )
    assert np.isfinite(ratio)
    if not benchmark.disabled:
        # What the harness adds per extra mode (prompting, resizing, scoring) stays within 30% of
        # the model's own unavoidable cost. (One encode per image is asserted by a unit test that
        # counts encoder calls: on tiny, re-encoding would hide inside this bound.)
        assert ratio <= MAX_RATIO * model_bound
        if model_bound <= MAX_RATIO:
            assert ratio <= MAX_RATIO
