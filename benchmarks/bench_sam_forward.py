"""Tiny-SAM forward (encoder + prompt encoder + decoder) with a box prompt and with 5 points.

Both run in the same session on the same image and weights, so their ratio is meaningful even on
a busy machine; `nox -s bench` prints the table and `extra_info` carries the prompt kind.
"""

from __future__ import annotations

import pytest
import torch

from spt.sam import build_sam


@pytest.fixture(scope="module")
def tiny_sam():
    return build_sam("tiny", seed=0)


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255


PROMPTS = {
    "box": {"boxes": torch.tensor([[20.0, 30.0, 90.0, 100.0]])},
    "points-5": {
        "point_coords": torch.tensor([[[30.0, 40.0], [50, 60], [70, 80], [40, 90], [85, 45]]]),
        "point_labels": torch.ones(1, 5),
    },
}


@pytest.mark.benchmark(group="tiny-sam-forward")
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_tiny_sam_forward(benchmark, tiny_sam, image, prompt):
    batch = [{"image": image, "original_size": (128, 128), **PROMPTS[prompt]}]
    benchmark.extra_info["prompt"] = prompt

    @torch.no_grad()
    def forward():
        return tiny_sam(batch, multimask_output=False)[0]["low_res_logits"]

    logits = benchmark(forward)
    assert logits.shape == (1, 1, 32, 32)
