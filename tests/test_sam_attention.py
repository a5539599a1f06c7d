"""spt.sam.attention: the SDPA path computes SAM's encoder attention, switches cleanly both ways
and keeps LoRA, adapter and peft wrappers working."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention

from baselines.adapter import add_encoder_adapters
from spt.errors import SuiteError
from spt.model.lora import add_encoder_lora
from spt.sam import build_sam
from spt.sam.attention import (
    ATTENTION_KINDS,
    BF16_TOLERANCE,
    FP32_TOLERANCE,
    FastAttention,
    set_attention,
    use_fast_attention,
    use_sam_attention,
)

VITB_SIZE = 256  # 16x16 grid: the windowed block pads it to 28x28 (4 windows of 14)


def _randomize(module: torch.nn.Module, names: tuple[str, ...], seed: int) -> None:
    """Random values for parameters SAM (or LoRA, or the adapters) zero-initialises, so the
    terms they add are actually compared."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if any(part in name for part in names):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def _tiny() -> ImageEncoderViT:
    encoder = build_sam("tiny", seed=0).image_encoder
    _randomize(encoder, ("rel_pos",), 1)
    return encoder


def _vitb_shaped(use_rel_pos: bool = True) -> ImageEncoderViT:
    """vit_b's width, heads and window, two blocks (windowed, then global), CPU-sized input."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = ImageEncoderViT(
            img_size=VITB_SIZE,
            patch_size=16,
            embed_dim=768,
            depth=2,
            num_heads=12,
            mlp_ratio=4,
            out_chans=256,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=use_rel_pos,
            window_size=14,
            global_attn_indexes=(1,),
        ).eval()
    _randomize(encoder, ("rel_pos",), 1)
    return encoder


ENCODERS = {
    "tiny": (_tiny, 128),
    "vitb-relpos": (partial(_vitb_shaped, True), VITB_SIZE),
    "vitb-no-relpos": (partial(_vitb_shaped, False), VITB_SIZE),
}


def _image(size: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _relative(fast: torch.Tensor, sam: torch.Tensor) -> float:
    """max |fast - sam| / max |sam| (element-wise ratios blow up at values near zero)."""
    return ((fast.float() - sam.float()).abs().max() / sam.float().abs().max()).item()


def _count(model: torch.nn.Module, cls: type) -> int:
    return sum(type(module) is cls for module in model.modules())


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_fp32_encoder_output_matches_sam(name):
    build, size = ENCODERS[name]
    sam = build()
    fast = use_fast_attention(copy.deepcopy(sam))
    assert _count(fast, FastAttention) == len(sam.blocks) and _count(fast, Attention) == 0
    x = _image(size)
    with torch.no_grad():
        expected, got = sam(x), fast(x)
    assert got.shape == expected.shape
    assert _relative(got, expected) <= FP32_TOLERANCE
    if sam.blocks[0].attn.use_rel_pos:
        # The rel-pos bias must matter far beyond the tolerance, or the comparison proves nothing.
        plain = copy.deepcopy(sam)
        _randomize(plain, ("rel_pos",), 3)
        with torch.no_grad():
            assert _relative(plain(x), expected) > 100 * FP32_TOLERANCE


@pytest.mark.parametrize("name", ["tiny", "vitb-relpos"])
def test_windowed_and_global_attention_modules_match(name):
    build, _ = ENCODERS[name]
    encoder = build()
    windowed = [b for b in encoder.blocks if b.window_size > 0]
    global_ = [b for b in encoder.blocks if b.window_size == 0]
    assert windowed and global_
    generator = torch.Generator().manual_seed(4)
    grid = encoder.img_size // encoder.patch_embed.proj.kernel_size[0]
    for block in windowed + global_:
        side = block.window_size or grid
        batch = 3 if block.window_size else 1  # windows arrive batched
        x = torch.randn(batch, side, side, block.attn.qkv.in_features, generator=generator)
        fast = use_fast_attention(copy.deepcopy(block.attn))
        with torch.no_grad():
            assert _relative(fast(x), block.attn(x)) <= FP32_TOLERANCE


def test_state_dict_and_hooks_unchanged_and_switch_back_is_exact(one_thread):
    model = _vitb_shaped()
    never_switched = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    model.blocks[1].attn.register_forward_hook(lambda *_: calls.append(1))

    assert set_attention(model, "sdpa") is model
    assert type(model.blocks[1].attn) is FastAttention
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    x = _image(VITB_SIZE)
    with torch.no_grad():
        model(x)
    assert calls == [1]  # the hook survived the class swap

    assert set_attention(model, "sam") is model
    assert _count(model, FastAttention) == 0 and _count(model, Attention) == 2
    with torch.no_grad():
        assert torch.equal(model(x), never_switched(x))
    # Switching twice is harmless.
    use_sam_attention(use_fast_attention(use_fast_attention(model)))
    with torch.no_grad():
        assert torch.equal(model(x), never_switched(x))


@pytest.mark.parametrize("name", ["tiny", "vitb-relpos"])
def test_gradients_flow_and_match_sam(name):
    build, size = ENCODERS[name]
    sam = build()
    fast = use_fast_attention(copy.deepcopy(sam))
    x = _image(size)
    weight = torch.randn(sam(x).shape, generator=torch.Generator().manual_seed(5))
    grads = {}
    for key, model in (("sam", sam), ("fast", fast)):
        inputs = x.clone().requires_grad_(True)
        (model(inputs) * weight).sum().backward()
        grads[key] = {n: p.grad for n, p in model.named_parameters()}
        grads[key]["input"] = inputs.grad
    assert grads["fast"].keys() == grads["sam"].keys()
    assert any("rel_pos" in n for n in grads["sam"])
    for n, expected in grads["sam"].items():
        got = grads["fast"][n]
        assert got is not None and expected is not None, n
        assert expected.abs().max() > 0, n
        assert _relative(got, expected) <= FP32_TOLERANCE, n


def _compare(sam: torch.nn.Module, fast: torch.nn.Module, size: int) -> None:
    x = _image(size)
    with torch.no_grad():
        assert _relative(fast(x), sam(x)) <= FP32_TOLERANCE


@pytest.mark.parametrize("name", ["tiny", "vitb-relpos"])
def test_lora_wrapped_qkv(name):
    build, size = ENCODERS[name]
    sam = build()
    added = add_encoder_lora(sam, 8, 1.0, 0.0)
    assert len(added) == len(sam.blocks)
    _randomize(sam, ("lora_B",), 6)  # B starts at zero: make the update count
    fast = use_fast_attention(copy.deepcopy(sam))
    assert _count(fast, FastAttention) == len(sam.blocks)
    _compare(sam, fast, size)
    # The LoRA tensors train through the fast path.
    fast(_image(size)).square().sum().backward()
    lora = [p for n, p in fast.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and p.grad.abs().max() > 0 for p in lora)


@pytest.mark.parametrize("name", ["tiny", "vitb-relpos"])
def test_adapter_wrapped_attention(name):
    build, size = ENCODERS[name]
    sam = build()
    add_encoder_adapters(sam, 0.25, "both", 0.1)
    _randomize(sam, ("adapter.up",), 7)  # up starts at zero
    assert _count(sam, Attention) == len(sam.blocks)  # inside AttentionWithAdapter
    fast = use_fast_attention(copy.deepcopy(sam))
    assert all(type(block.attn.attn) is FastAttention for block in fast.blocks)
    _compare(sam, fast, size)


def test_peft_wrapped_qkv():
    peft = pytest.importorskip("peft")
    sam = _tiny()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        wrapped = peft.get_peft_model(
            sam, peft.LoraConfig(r=4, lora_alpha=4, target_modules=["qkv"], bias="none")
        )
    _randomize(sam, ("lora_B",), 8)
    reference = copy.deepcopy(wrapped)
    use_fast_attention(wrapped)
    assert _count(wrapped, FastAttention) == len(sam.blocks)
    assert "lora" in type(sam.blocks[0].attn.qkv).__module__
    _compare(reference, wrapped, 128)


@pytest.mark.parametrize("name", ["tiny", "vitb-relpos"])
def test_bf16_autocast_close_to_fp32(name):
    build, size = ENCODERS[name]
    sam = build()
    fast = use_fast_attention(copy.deepcopy(sam))
    x = _image(size)
    with torch.no_grad():
        expected = sam(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fast(x)
    assert torch.isfinite(got).all()
    assert _relative(got, expected) <= BF16_TOLERANCE


def test_bf16_mask_takes_query_dtype():
    attn = use_fast_attention(copy.deepcopy(_tiny().blocks[1].attn))
    q = torch.randn(1, attn.num_heads, 64, attn.rel_pos_h.shape[1], dtype=torch.bfloat16)
    bias = attn._rel_pos_bias(q, 8, 8)
    assert bias.dtype == torch.bfloat16 and bias.shape == (1, attn.num_heads, 64, 64)


def test_unknown_kind_lists_the_valid_ones():
    assert ATTENTION_KINDS == ("sam", "sdpa")
    with pytest.raises(SuiteError, match="sam, sdpa") as info:
        set_attention(_tiny(), "flash")
    assert "\n" not in str(info.value) and "'flash'" in str(info.value)
