"""One SPT training step against one plain-LoRA training step, as a ratio in one run.

Plain LoRA = SAM with the same LoRA modules as SPT (encoder q/v of the fused qkv, decoder
q_proj/v_proj, r=8) and one decoder, no relation; SPT adds the relation, the gammas and the
second (final) decoder with its loss. Both take the same batch (the same prepared image, box and
target), the same HQ-SAM loss and an Adam step. pytest-benchmark times the SPT step; the test
also times both, interleaved, and stores the ratio of the medians in ``extra_info``.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import pytest
import torch

from spt.harness.method import TrainingSample
from spt.harness.prompts import build_prompt
from spt.model.lora import add_decoder_lora, add_encoder_lora
from spt.model.method import SPTMethod
from spt.sam import build_sam, get_spec
from spt.training.losses import hq_sam_loss

BACKBONES = os.environ.get("SPT_BENCH_BACKBONES", "tiny").split(",")


def training_sample(size: int = 128) -> TrainingSample:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[size * 40 // 128 : size * 90 // 128, size * 30 // 128 : size * 100 // 128] = 255
    planes = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    return TrainingSample(
        image_id="bench/0",
        image=(planes - 120.0) / 58.0,
        image_uint8=image,
        target=torch.from_numpy(mask / 255)[None, None],
        prompt=build_prompt("box", mask, 0, "bench/0", size // 4),
        key=7,
    )


class PlainLoRA(torch.nn.Module):
    """SAM + LoRA (SPT's own modules, rank 8) with one decoder and the same loss."""

    def __init__(self, backbone: str = "tiny"):
        super().__init__()
        self.sam = build_sam(backbone, seed=0)
        self.sam.requires_grad_(False)
        add_encoder_lora(self.sam.image_encoder, 8, 1.0, 0.0)
        add_decoder_lora(self.sam.mask_decoder, 8, 1.0, 0.0)

    def losses(self, sample: TrainingSample) -> torch.Tensor:
        embedding = self.sam.image_encoder(sample.image)
        sparse, dense = self.sam.prompt_encoder(**sample.prompt.as_tensors())
        logits, _ = self.sam.mask_decoder(
            embedding, self.sam.prompt_encoder.get_dense_pe(), sparse, dense, False
        )
        bce, dice = hq_sam_loss(logits, sample.target, torch.Generator().manual_seed(sample.key))
        return bce + dice


def _steppers(backbone: str = "tiny"):
    sample = training_sample(get_spec(backbone).image_size)
    spt = SPTMethod(backbone)
    spt.network.train()
    spt_opt = torch.optim.Adam(spt.trainable_parameters(), lr=1e-4)
    plain = PlainLoRA(backbone).train()
    plain_opt = torch.optim.Adam([p for p in plain.parameters() if p.requires_grad], lr=1e-4)

    def spt_step():
        spt_opt.zero_grad()
        loss = spt.training_losses([sample])["loss"]
        loss.backward()
        spt_opt.step()
        return loss

    def plain_step():
        plain_opt.zero_grad()
        loss = plain.losses(sample)
        loss.backward()
        plain_opt.step()
        return loss

    return spt_step, plain_step, spt, plain


def _median_seconds(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.mark.benchmark(group="train-step")
@pytest.mark.parametrize("backbone", BACKBONES)
def test_spt_train_step_vs_plain_lora(benchmark, backbone):
    spt_step, plain_step, spt, plain = _steppers(backbone)
    trainable_plain = sum(p.numel() for p in plain.parameters() if p.requires_grad)
    assert spt.trainable_parameter_count() > trainable_plain  # gammas + the final decoder's LoRA
    heavy = backbone != "tiny"  # a vit_b step at 1024 px takes tens of seconds on a CPU
    loss = benchmark.pedantic(spt_step, rounds=1, iterations=1) if heavy else benchmark(spt_step)
    assert torch.isfinite(loss)
    if heavy:
        rounds = 1 if benchmark.disabled else 3
    else:
        rounds = 3 if benchmark.disabled else 30
    spt_times, plain_times = [], []
    for _ in range(rounds):  # interleaved: both see the same machine load
        plain_times.append(_median_seconds(plain_step, 1))
        spt_times.append(_median_seconds(spt_step, 1))
    ratio = statistics.median(spt_times) / statistics.median(plain_times)
    benchmark.extra_info.update(
        backbone=backbone,
        spt_step_median_s=statistics.median(spt_times),
        plain_lora_step_median_s=statistics.median(plain_times),
        spt_over_plain_lora=ratio,
        trainable_spt=spt.trainable_parameter_count(),
        trainable_plain_lora=trainable_plain,
    )
    print(f"\n{backbone} SPT / plain LoRA training step: {ratio:.2f}")
    assert np.isfinite(ratio)
