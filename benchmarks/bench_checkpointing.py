"""SPT training step with the image-encoder blocks activation-checkpointed against without.

Checkpointing (spt/sam/checkpointing.py) keeps only each encoder block's input during the
forward pass and recomputes the block in the backward pass: less peak memory for about one more
encoder forward. Two measurements per backbone, each inside one run:

- time: one training step (forward + backward + Adam) of SPTMethod, as in bench_train_step.py
  but on the backbone's own image size (random weights: timing does not depend on them).
  pytest-benchmark times the checkpointed step; each round first runs (and times) a plain step
  on the same model in its setup, so the two alternate under the same load; the ratio of the
  medians is ``extra_info["checkpointed_over_plain"]``.
- memory: the process's peak RSS around ONE training step, each variant in its own fresh child
  process (peak RSS only grows within a process, so the first variant would mask the second).
  The child reports its peak RSS (``VmHWM``; see :func:`spt.harness.compute.peak_rss_bytes` for why not only
  ``ru_maxrss``, which is recorded too) before and after the step; ``extra_info`` holds both peaks,
  the step's own increase and the saving.

Backbones: ``tiny`` by default; ``SPT_BENCH_BACKBONES=vit_b`` (or ``tiny,vit_b``) adds published
ones. At vit_b a step takes minutes on a CPU and several GB (timed: 2 rounds); with
``--benchmark-disable`` each variant runs one step.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench_train_step import training_sample
from spt.harness.compute import peak_rss_bytes
from spt.model.method import SPTMethod
from spt.sam import get_spec
from spt.sam.checkpointing import checkpoint_encoder_blocks

BACKBONES = os.environ.get("SPT_BENCH_BACKBONES", "tiny").split(",")
REPO_ROOT = Path(__file__).resolve().parents[1]
KIB_PER_MIB = 1024  # VmHWM and ru_maxrss are in KiB on Linux


def _stepper(backbone: str):
    """(method, step): one SPT training step on a fixed sample with its own Adam."""
    sample = training_sample(get_spec(backbone).image_size)
    method = SPTMethod(backbone)
    method.network.train()
    optimizer = torch.optim.Adam(list(method.trainable_parameters()), lr=1e-4)

    def step() -> torch.Tensor:
        optimizer.zero_grad()
        loss = method.training_losses([sample])["loss"]
        loss.backward()
        optimizer.step()
        return loss.detach()

    return method, step


def _peak_rss_kib() -> int:
    """This process's own peak RSS in KiB (spt.harness.compute: ``VmHWM``, since ``ru_maxrss``
    carries a parent's peak across exec; measured 9 GiB in a child of a vit_b parent)."""
    return peak_rss_bytes() // 1024


def child_measure(backbone: str, checkpointed: bool, threads: int) -> dict:
    """Run in a fresh child process: peak RSS before and after one training step."""
    torch.set_num_threads(threads)
    method, step = _stepper(backbone)
    if checkpointed:
        assert checkpoint_encoder_blocks(method.network) == get_spec(backbone).encoder_depth
    before = _peak_rss_kib()
    start = time.perf_counter()
    loss = step()
    seconds = time.perf_counter() - start
    return {
        "before_kib": before,
        "after_kib": _peak_rss_kib(),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "step_s": seconds,
        "loss": float(loss),
    }


# spt first in the child too: it pins the numerics before torch is imported.
_CHILD = (
    "import sys, json; import spt; from benchmarks.bench_checkpointing import child_measure; "
    "print('RESULT ' + json.dumps(child_measure(sys.argv[1], sys.argv[2] == '1', "
    "int(sys.argv[3]))))"
)


def _measure_in_child(backbone: str, checkpointed: bool) -> dict:
    args = [backbone, "1" if checkpointed else "0", str(torch.get_num_threads())]
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))


def _measure_both(backbone: str) -> dict[str, dict]:
    return {
        "plain": _measure_in_child(backbone, False),
        "checkpointed": _measure_in_child(backbone, True),
    }


@pytest.mark.benchmark(group="encoder-checkpointing-time")
@pytest.mark.parametrize("backbone", BACKBONES)
def test_checkpointed_train_step_time(benchmark, backbone):
    method, step = _stepper(backbone)
    depth = get_spec(backbone).encoder_depth
    # vit_b: minutes per step on a CPU; first-call costs are negligible there, so no warm-up.
    rounds = 1 if benchmark.disabled else (20 if backbone == "tiny" else 2)
    if backbone == "tiny":
        # Warm-up of both paths, untimed: first-touch allocations, Adam state, first-call costs.
        step()
        assert checkpoint_encoder_blocks(method.network) == depth
        step()
    plain_times, ckpt_times = [], []

    def plain_round():  # setup of each round: untimed by pytest-benchmark, timed here
        assert checkpoint_encoder_blocks(method.network, enabled=False) in (0, depth)
        start = time.perf_counter()
        loss = step()
        plain_times.append(time.perf_counter() - start)
        assert torch.isfinite(loss)
        assert checkpoint_encoder_blocks(method.network) == depth

    def checkpointed_step():
        start = time.perf_counter()
        loss = step()
        ckpt_times.append(time.perf_counter() - start)
        return loss

    loss = benchmark.pedantic(checkpointed_step, setup=plain_round, rounds=rounds, iterations=1)
    assert torch.isfinite(loss)
    assert len(plain_times) == len(ckpt_times) == rounds
    plain_median, ckpt_median = statistics.median(plain_times), statistics.median(ckpt_times)
    ratio = ckpt_median / plain_median
    benchmark.extra_info.update(
        backbone=backbone,
        rounds=rounds,
        threads=torch.get_num_threads(),
        plain_step_median_s=plain_median,
        checkpointed_step_median_s=ckpt_median,
        checkpointed_over_plain=ratio,
    )
    print(
        f"\n{backbone}: checkpointed / plain SPT training step: {ratio:.3f} "
        f"({ckpt_median:.3f} s / {plain_median:.3f} s, {rounds} rounds, "
        f"{torch.get_num_threads()} threads)"
    )
    assert np.isfinite(ratio) and ratio > 0


@pytest.mark.benchmark(group="encoder-checkpointing-memory")
@pytest.mark.parametrize("backbone", BACKBONES)
def test_checkpointed_train_step_peak_memory(benchmark, backbone):
    # One child per variant; pytest-benchmark's figure is the time of both children.
    runs = benchmark.pedantic(_measure_both, args=(backbone,), rounds=1, iterations=1)
    plain, ckpt = runs["plain"], runs["checkpointed"]
    for run in (plain, ckpt):
        assert 0 < run["before_kib"] <= run["after_kib"]
        assert np.isfinite(run["loss"]) and run["step_s"] > 0
    plain_peak, ckpt_peak = plain["after_kib"] / KIB_PER_MIB, ckpt["after_kib"] / KIB_PER_MIB
    plain_step = (plain["after_kib"] - plain["before_kib"]) / KIB_PER_MIB
    ckpt_step = (ckpt["after_kib"] - ckpt["before_kib"]) / KIB_PER_MIB
    benchmark.extra_info.update(
        backbone=backbone,
        threads=torch.get_num_threads(),
        plain_peak_rss_mib=plain_peak,
        checkpointed_peak_rss_mib=ckpt_peak,
        peak_saving_mib=plain_peak - ckpt_peak,
        plain_before_step_rss_mib=plain["before_kib"] / KIB_PER_MIB,
        checkpointed_before_step_rss_mib=ckpt["before_kib"] / KIB_PER_MIB,
        plain_step_increase_mib=plain_step,
        checkpointed_step_increase_mib=ckpt_step,
        plain_ru_maxrss_mib=plain["ru_maxrss_kib"] / KIB_PER_MIB,
        checkpointed_ru_maxrss_mib=ckpt["ru_maxrss_kib"] / KIB_PER_MIB,
        plain_step_s=plain["step_s"],
        checkpointed_step_s=ckpt["step_s"],
    )
    print(
        f"\n{backbone}: peak RSS of one training step: plain {plain_peak:.0f} MiB "
        f"(+{plain_step:.0f} by the step), checkpointed {ckpt_peak:.0f} MiB "
        f"(+{ckpt_step:.0f}); saving {plain_peak - ckpt_peak:.0f} MiB"
    )
    # Sanity, not a target figure: checkpointing must not raise the peak beyond RSS noise.
    assert ckpt_peak <= plain_peak * 1.02 + 16
