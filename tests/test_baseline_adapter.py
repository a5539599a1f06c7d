"""The bottleneck-adapter baseline on tiny SAM: where the adapters sit, counts, step-0 identity
with zero-shot SAM, what trains, training, every prompt mode and the checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from baselines.adapter import AttentionWithAdapter, BottleneckAdapter, MLPWithParallelAdapter
from spt.errors import SuiteError
from spt.harness.method import build_method
from spt.harness.prompts import DEFAULT_PROMPT_MODES, build_prompt
from spt.sam import build_sam, get_spec
from tests.test_baseline_lora import (
    LOW_RES,
    amplify_decoder,
    assert_trains_and_evaluates,
    final_logits,
    perturb_trainable,
    synthetic_samples,
    train_steps,
)

TINY = get_spec("tiny")


def adapter_count(spec, ratio: float, adapters_per_block: int) -> int:
    """Independent formula: down (dim x w + w) plus up (w x dim + dim) per adapter."""
    dim = spec.encoder_dim
    width = int(dim * ratio)
    return spec.encoder_depth * adapters_per_block * (2 * dim * width + width + dim)


def decoder_trainable_count(multimask_output: bool = False) -> int:
    """SAM's mask decoder without the IoU head and, single-mask, hypernetworks 1-3."""
    decoder = build_sam("tiny").mask_decoder
    frozen = list(decoder.iou_prediction_head.parameters())
    if not multimask_output:
        frozen += [p for mlp in decoder.output_hypernetworks_mlps[1:] for p in mlp.parameters()]
    return sum(p.numel() for p in decoder.parameters()) - sum(p.numel() for p in frozen)


@pytest.mark.parametrize(
    ("params", "per_block"),
    [
        ({"train_decoder": False}, 2),
        ({"train_decoder": False, "placement": "attn"}, 1),
        ({"train_decoder": False, "placement": "mlp", "ratio": 0.5}, 1),
        ({}, 2),
        ({"multimask_output": True}, 2),
    ],
)
def test_trainable_count_matches_formula(params, per_block):
    method = build_method("adapter", "tiny", params=params)
    expected = adapter_count(TINY, params.get("ratio", 0.25), per_block)
    if params.get("train_decoder", True):
        expected += decoder_trainable_count(params.get("multimask_output", False))
    assert method.trainable_parameter_count() == expected
    trainable = [n for n, p in method.network.named_parameters() if p.requires_grad]
    encoder_side = [n for n in trainable if not n.startswith("mask_decoder.")]
    assert encoder_side and all(".adapter." in n for n in encoder_side)


def test_adapters_sit_around_attention_and_beside_the_mlp():
    method = build_method("adapter", "tiny")
    for block in method.sam.image_encoder.blocks:
        assert isinstance(block.attn, AttentionWithAdapter)
        assert isinstance(block.mlp, MLPWithParallelAdapter) and block.mlp.scale == 0.5
        assert block.attn.adapter.down.out_features == TINY.encoder_dim // 4
    only_mlp = build_method("adapter", "tiny", params={"placement": "mlp"})
    assert not any(
        isinstance(b.attn, AttentionWithAdapter) for b in only_mlp.sam.image_encoder.blocks
    )


def test_wrappers_compute_what_the_docs_say():
    adapter = BottleneckAdapter(8, 2)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(adapter(x), torch.zeros_like(x))  # zero-initialised up-projection
    perturb = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=perturb))
    inner = torch.nn.Linear(8, 8)
    manual = adapter.up(torch.nn.functional.gelu(adapter.down(inner(x))))
    with torch.no_grad():
        assert torch.allclose(AttentionWithAdapter(inner, adapter)(x), inner(x) + manual)
        parallel = MLPWithParallelAdapter(inner, adapter, 0.5)(x)
        expected = inner(x) + 0.5 * adapter.up(torch.nn.functional.gelu(adapter.down(x)))
        assert torch.allclose(parallel, expected)


@pytest.mark.parametrize("placement", ["attn", "mlp"])
def test_step_zero_equals_zero_shot_sam_and_adapters_are_on_the_path(placement):
    sample = synthetic_samples(1, seed=2)[0]
    method = build_method("adapter", "tiny", params={"placement": placement, "init_seed": 4})
    zero_shot = build_method("zero_shot", "tiny", params={"init_seed": 4})
    assert torch.equal(final_logits(method, sample), final_logits(zero_shot, sample))
    generator = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for adapter in method.adapters:
            adapter.up.weight.copy_(torch.randn(adapter.up.weight.shape, generator=generator))
    assert not torch.allclose(final_logits(method, sample), final_logits(zero_shot, sample))


@pytest.mark.parametrize("train_decoder", [True, False])
def test_gradients_reach_exactly_the_trainable_tensors(train_decoder):
    method = build_method("adapter", "tiny", params={"train_decoder": train_decoder})
    method.training_losses(synthetic_samples(2))["loss"].backward()
    with_grad = {n for n, p in method.network.named_parameters() if p.grad is not None}
    trainable = {n for n, p in method.network.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert any(n.startswith("mask_decoder.") for n in trainable) == train_decoder


@pytest.mark.parametrize(
    ("params", "lr", "ratio"), [({}, 3e-3, 0.8), ({"train_decoder": False}, 3e-2, 0.93)]
)
def test_a_few_steps_lower_the_training_loss(params, lr, ratio):
    method = build_method("adapter", "tiny", params={**params, "loss_points": 1024})
    amplify_decoder(method)
    samples = synthetic_samples(2)
    history = train_steps(method, samples, steps=10, lr=lr)
    after = method.training_losses(samples)["loss"].item()
    assert after < ratio * history[0], (history, after)


def test_every_prompt_mode_decodes():
    method = build_method("adapter", "tiny")
    sample = synthetic_samples(1, seed=7)[0]
    resized = sample.target[0, 0].numpy() * 255.0
    state = method.encode(sample.image)
    for mode in DEFAULT_PROMPT_MODES:
        prompt = build_prompt(mode, resized, 0, sample.image_id, LOW_RES)
        logits = method.decode(state, prompt)["final"]
        assert logits.shape == (prompt.count, 1, LOW_RES, LOW_RES) and torch.isfinite(logits).all()


def test_trained_state_round_trip():
    method = build_method("adapter", "tiny")
    perturb_trainable(method)
    state = method.trained_state()
    assert sum(t.numel() for t in state.values()) == method.trainable_parameter_count()
    fresh = build_method("adapter", "tiny")
    sample = synthetic_samples(1)[0]
    assert not torch.equal(final_logits(fresh, sample), final_logits(method, sample))
    fresh.load_trained_state(state)
    assert torch.equal(final_logits(fresh, sample), final_logits(method, sample))
    with pytest.raises(SuiteError, match="does not fit method 'adapter'"):
        build_method("adapter", "tiny", params={"train_decoder": False}).load_trained_state(state)
    with pytest.raises(SuiteError, match="other shapes"):
        build_method("adapter", "tiny", params={"ratio": 0.5}).load_trained_state(state)


def test_bad_params_are_suite_errors():
    with pytest.raises(SuiteError, match=r"methods\.adapter\.placement must be one of .*'neck'"):
        build_method("adapter", "tiny", params={"placement": "neck"})
    with pytest.raises(SuiteError, match=r"methods\.adapter\.ratio must be a number > 0"):
        build_method("adapter", "tiny", params={"ratio": 0})
    with pytest.raises(SuiteError, match="no adapter width"):
        build_method("adapter", "tiny", params={"ratio": 0.001})


def test_trains_and_evaluates_through_spt_train_and_evaluate(synthetic_prepared, tmp_path):
    params = {"loss_points": 1024}
    assert_trains_and_evaluates("adapter", params, synthetic_prepared, tmp_path)
