"""bf16 autocast against fp32 on this CPU, in one run: SPT inference (encode + one box decode)
and one SPT training step (forward, fp32 loss, backward, Adam), the ratio of the medians of
interleaved rounds in ``extra_info["bf16_over_fp32"]``.

Skipped where oneDNN has no native bf16 kernels (a CPU without AVX-512 BF16 or AMX, or the
portable numerics, which cap oneDNN at SSE4.1): emulated bf16 is slower than fp32 and the
figure would only say so. bf16 is never part of the portable reference anyway. Backbones from ``SPT_BENCH_BACKBONES`` (default tiny;
``nox -s bench`` adds vit_b). The logit difference against fp32 is stored too.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import pytest
import torch

from benchmarks.bench_train_step import training_sample
from spt.harness.compute import autocast
from spt.model.method import SPTMethod
from spt.sam import get_spec

BACKBONES = os.environ.get("SPT_BENCH_BACKBONES", "tiny").split(",")

pytestmark = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    reason="no native bf16 kernels here (a CPU without AVX-512 BF16 / AMX, or portable numerics, "
    "which caps oneDNN at SSE4.1): the ratio would measure emulation; on a bf16 CPU run "
    "SPT_NUMERICS=native nox -s bench",
)


@pytest.fixture(scope="module", params=BACKBONES)
def method(request):
    backbone = request.param
    spt = SPTMethod(backbone)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero adapters: SPT's full work
        for param in spt.trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return backbone, spt, training_sample(get_spec(backbone).image_size)


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _interleaved(benchmark, backbone, fp32_fn, bf16_fn) -> dict:
    heavy = backbone != "tiny"
    if heavy:
        benchmark.pedantic(bf16_fn, rounds=1, iterations=1)
    else:
        benchmark(bf16_fn)
    rounds = 1 if benchmark.disabled else (3 if heavy else 20)
    fp32_times, bf16_times = [], []
    for _ in range(rounds):
        fp32_times.append(_timed(fp32_fn)[0])
        bf16_times.append(_timed(bf16_fn)[0])
    fp32, bf16 = statistics.median(fp32_times), statistics.median(bf16_times)
    return {"backbone": backbone, "rounds": rounds, "fp32_s": fp32, "bf16_s": bf16,
            "bf16_over_fp32": bf16 / fp32}  # fmt: skip


@pytest.mark.benchmark(group="precision")
def test_bf16_inference_vs_fp32(benchmark, method):
    backbone, spt, sample = method
    spt.network.eval()

    def predict(precision):
        with torch.inference_mode(), autocast("cpu", precision):
            state = spt.encode(sample.image)
            return spt.decode(state, sample.prompt)["final"].float()

    figures = _interleaved(benchmark, backbone, lambda: predict("fp32"), lambda: predict("bf16"))
    difference = (predict("fp32") - predict("bf16")).abs()
    figures |= {"max_abs_logit_diff": float(difference.max()),
                "mean_abs_logit_diff": float(difference.mean())}  # fmt: skip
    benchmark.extra_info.update(figures)
    print(
        f"\n{backbone} SPT inference bf16 / fp32: {figures['bf16_over_fp32']:.2f} "
        f"(max |logit diff| {figures['max_abs_logit_diff']:.3g})"
    )
    assert np.isfinite(figures["bf16_over_fp32"]) and figures["bf16_over_fp32"] > 0
    assert np.isfinite(figures["max_abs_logit_diff"])


@pytest.mark.benchmark(group="precision")
def test_bf16_training_step_vs_fp32(benchmark, method):
    backbone, spt, sample = method
    spt.network.train()
    optimizer = torch.optim.Adam(list(spt.trainable_parameters()), lr=1e-5)

    def step(precision):
        optimizer.zero_grad()
        with autocast("cpu", precision):
            loss = spt.training_losses([sample])["loss"]
        loss.backward()
        optimizer.step()
        return loss

    figures = _interleaved(benchmark, backbone, lambda: step("fp32"), lambda: step("bf16"))
    benchmark.extra_info.update(figures)
    print(f"\n{backbone} SPT training step bf16 / fp32: {figures['bf16_over_fp32']:.2f}")
    assert torch.isfinite(step("bf16"))
    assert np.isfinite(figures["bf16_over_fp32"]) and figures["bf16_over_fp32"] > 0
