"""Activation checkpointing of SAM's encoder blocks (spt/sam/checkpointing.py): bit-identical
losses and gradients in float32 for plain SAM, SPT and the LoRA and adapter baselines; evaluation
and no_grad untouched; the class swap keeps parameters and state-dict keys and switches back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.utils.checkpoint
from segment_anything.modeling.image_encoder import Block

from baselines.adapter import AttentionWithAdapter, MLPWithParallelAdapter
from spt.harness.method import TrainingSample, build_method
from spt.harness.prompts import build_prompt
from spt.sam import build_sam, get_spec
from spt.sam.checkpointing import CheckpointedBlock, checkpoint_encoder_blocks

TINY = get_spec("tiny")


@pytest.fixture
def checkpoint_calls(monkeypatch) -> list[int]:
    """Counts calls of torch.utils.checkpoint.checkpoint (still running the real one)."""
    calls: list[int] = []
    real = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    return calls


def _sample() -> TrainingSample:
    """A 128 px random image with a rectangular target and its box prompt."""
    rng = np.random.default_rng(0)
    size = TINY.image_size
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[40:90, 30:100] = 255
    planes = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    return TrainingSample(
        image_id="ckpt/0",
        image=(planes - 120.0) / 58.0,
        image_uint8=image,
        target=torch.from_numpy(mask / 255)[None, None],
        prompt=build_prompt("box", mask, 0, "ckpt/0", TINY.low_res_size),
        key=7,
    )


def _randomise(params, seed: int = 5) -> None:
    """Non-zero values everywhere (LoRA B and adapter ``up`` start at zero, which would leave
    their partners without gradient and the comparison weaker)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def _loss_and_grads(loss_fn, named_params) -> tuple[torch.Tensor, dict]:
    for _, p in named_params:
        p.grad = None
    torch.manual_seed(123)  # the same draws for any dropout, with and without checkpointing
    loss = loss_fn()
    loss.backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in named_params}
    return loss.detach().clone(), grads


def _assert_exact(network, loss_fn, named_params, expected_blocks, calls) -> None:
    """Loss and every gradient bit-identical with and without checkpointing; checkpointing ran
    once per block in the checkpointed pass and never in the plain one."""
    network.train()
    plain_loss, plain_grads = _loss_and_grads(loss_fn, named_params)
    assert not calls
    assert checkpoint_encoder_blocks(network) == expected_blocks
    ckpt_loss, ckpt_grads = _loss_and_grads(loss_fn, named_params)
    assert len(calls) == expected_blocks
    assert torch.isfinite(plain_loss) and torch.equal(plain_loss, ckpt_loss)
    assert plain_grads.keys() == ckpt_grads.keys()
    with_grad = [n for n, g in plain_grads.items() if g is not None]
    # The comparison must cover the encoder: some gradient reaches its blocks' parameters.
    assert any(".blocks." in n and plain_grads[n].abs().sum() > 0 for n in with_grad)
    for name in plain_grads:
        a, b = plain_grads[name], ckpt_grads[name]
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.equal(a, b), f"gradient of {name} differs under checkpointing"


def test_plain_sam_everything_trainable_is_exact(one_thread, checkpoint_calls):
    sam = build_sam("tiny", seed=0)
    sam.requires_grad_(True)
    image = _sample().image
    # A fixed random weighting: every output element gets a different upstream gradient.
    weight = torch.randn(1, TINY.prompt_dim, 8, 8, generator=torch.Generator().manual_seed(1))

    def loss_fn():
        return (sam.image_encoder(image) * weight).sum()

    named = list(sam.named_parameters())
    _assert_exact(sam, loss_fn, named, TINY.encoder_depth, checkpoint_calls)
    assert all(g is not None for g in (p.grad for _, p in sam.image_encoder.named_parameters()))


@pytest.mark.parametrize(
    ("method_name", "params"),
    [
        ("spt", {}),
        ("spt", {"lora_dropout": 0.1}),  # randomness inside the blocks: RNG state is replayed
        ("lora", {}),
        ("lora", {"targets": "qv", "dropout": 0.1}),
        ("adapter", {}),
    ],
)
def test_trainable_methods_are_exact(method_name, params, one_thread, checkpoint_calls):
    method = build_method(method_name, "tiny", params=params)
    trainable = list(method.trainable_parameters())
    _randomise(trainable)
    named = [(n, p) for n, p in method.network.named_parameters() if p.requires_grad]
    assert len(named) == len(trainable)
    sample = _sample()

    def loss_fn():
        return method.training_losses([sample])["loss"]

    _assert_exact(method.network, loss_fn, named, TINY.encoder_depth, checkpoint_calls)


def test_adam_step_matches(one_thread):
    """One full training step (loss, backward, Adam) leaves bit-identical weights."""
    sample = _sample()
    weights = []
    for enabled in (False, True):
        method = build_method("spt", "tiny")
        _randomise(method.trainable_parameters())
        if enabled:
            assert checkpoint_encoder_blocks(method.network) == TINY.encoder_depth
        method.network.train()
        optimizer = torch.optim.Adam(list(method.trainable_parameters()), lr=1e-3)
        for _ in range(2):
            optimizer.zero_grad()
            method.training_losses([sample])["loss"].backward()
            optimizer.step()
        weights.append(method.trained_state())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("mode", ["eval", "no_grad"])
def test_evaluation_is_unchanged_and_not_checkpointed(mode, one_thread, checkpoint_calls):
    sam = build_sam("tiny", seed=0)
    image = _sample().image
    with torch.no_grad():
        expected = sam.image_encoder(image)
    assert checkpoint_encoder_blocks(sam) == TINY.encoder_depth
    if mode == "eval":
        sam.eval()  # gradients on: a training-free forward still runs the plain block
        sam.requires_grad_(True)
        out = sam.image_encoder(image)
        assert out.requires_grad
    else:
        sam.train()
        with torch.no_grad():
            out = sam.image_encoder(image)
    assert not checkpoint_calls
    assert torch.equal(out.detach(), expected)


def test_count_state_dict_and_switching_back():
    sam = build_sam("tiny", seed=0)
    before = sam.state_dict()
    params_before = dict(sam.named_parameters())
    hook_calls = []
    sam.image_encoder.blocks[0].register_forward_hook(lambda *_: hook_calls.append(1))

    assert checkpoint_encoder_blocks(sam) == TINY.encoder_depth
    assert checkpoint_encoder_blocks(sam) == 0  # already switched
    blocks = list(sam.image_encoder.blocks)
    assert all(type(b) is CheckpointedBlock and isinstance(b, Block) for b in blocks)
    after = sam.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(p is params_before[n] for n, p in sam.named_parameters())  # same objects
    sam.train()
    sam.image_encoder(_sample().image).sum().backward()
    assert hook_calls == [1]  # the hook stays, and runs once per forward, not per recompute

    assert checkpoint_encoder_blocks(sam, enabled=False) == TINY.encoder_depth
    assert checkpoint_encoder_blocks(sam, enabled=False) == 0
    assert all(type(b) is Block for b in sam.image_encoder.blocks)
    assert list(sam.state_dict()) == list(before)


def test_composes_with_wrapped_children():
    """Only the Block class changes: the adapter's wrappers stay where they are."""
    method = build_method("adapter", "tiny")
    assert checkpoint_encoder_blocks(method.network) == TINY.encoder_depth
    for block in method.sam.image_encoder.blocks:
        assert type(block) is CheckpointedBlock
        assert isinstance(block.attn, AttentionWithAdapter)
        assert isinstance(block.mlp, MLPWithParallelAdapter)
