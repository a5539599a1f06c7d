"""The converter between the official SAM-SPT checkpoint layout and SPTModel's, and file loading."""

from __future__ import annotations

import pytest
import torch

from spt.errors import SuiteError
from spt.model import SPTConfig, build_spt
from spt.model.convert import load_official_spt, official_to_suite, suite_to_official

R = 4


def randomised_tiny(seed: int = 1, **config):
    """A tiny SPT whose LoRA B and gammas are non-zero, so every tensor carries information."""
    model = build_spt("tiny", SPTConfig(lora_rank=R, **config), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in model.named_trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model


def test_suite_official_suite_round_trip_is_exact():
    suite = randomised_tiny().state_dict()
    back = official_to_suite(suite_to_official(suite))
    assert set(back) == set(suite)
    for key in suite:
        assert torch.equal(back[key], suite[key]), key


def test_official_round_trip_on_fixture_is_exact(fixture_path):
    official = torch.load(fixture_path, weights_only=True)["state_dict"]
    back = suite_to_official(official_to_suite(official))
    assert set(back) == set(official)
    for key in official:
        assert torch.equal(back[key], official[key]), key


def test_key_mapping_names_and_qkv_split():
    model = randomised_tiny()
    suite = model.state_dict()
    official = suite_to_official(suite)
    # The official names are swapped: its mask_decoder is our draft decoder.
    gamma = "transformer.layers.1.relation_adapter.gamma"
    assert torch.equal(
        official["mask_decoder.transformer.layers.1.lora_sim_scale"],
        suite[f"draft_decoder.{gamma}"],
    )
    assert torch.equal(
        official["draft_decoder.transformer.layers.1.lora_sim_scale"],
        suite[f"final_decoder.{gamma}"],
    )
    assert not any(k.startswith("final_decoder.") for k in official)
    q = "transformer.final_attn_token_to_image.q_proj"
    assert torch.equal(
        official[f"draft_decoder.{q}.weight"], suite[f"final_decoder.{q}.base.weight"]
    )
    assert torch.equal(official[f"mask_decoder.{q}.lora_B"], suite[f"draft_decoder.{q}.lora_B"])
    # qkv LoRA: two stacked groups, q then v; the official delta has zero k rows.
    qkv = "image_encoder.blocks.0.attn.qkv"
    a, b = official[f"{qkv}.lora_A"], official[f"{qkv}.lora_B"]
    assert a.shape == (2 * R, 64) and b.shape == (128, R)
    assert torch.equal(a[:R], suite[f"{qkv}.lora_A_q"]) and torch.equal(
        a[R:], suite[f"{qkv}.lora_A_v"]
    )
    assert torch.equal(b[:64], suite[f"{qkv}.lora_B_q"]) and torch.equal(
        b[64:], suite[f"{qkv}.lora_B_v"]
    )
    layer = model.image_encoder.blocks[0].attn.qkv
    official_delta = torch.zeros(192, 64)
    official_delta[:64] = b[:64] @ a[:R]
    official_delta[128:] = b[64:] @ a[R:]
    assert torch.allclose(layer.delta_weight(), official_delta / R, atol=1e-7)


def test_load_official_full_checkpoint(tmp_path, fixture_path):
    fixture = torch.load(fixture_path, weights_only=True)
    path = tmp_path / "spt_full.pth"
    torch.save(fixture["state_dict"], path)
    model = load_official_spt(path, "tiny")
    assert model.config.lora_rank == R  # read from the shapes, not the default 8
    loaded = suite_to_official(model.state_dict())
    for key, tensor in fixture["state_dict"].items():
        assert torch.equal(loaded[key], tensor), key


def test_load_official_lora_only_checkpoint_over_sam(tmp_path):
    """An official file with only LoRA and gamma tensors is laid over the SAM checkpoint; both
    decoders start from SAM's mask decoder, as the official loader does."""
    reference = randomised_tiny(seed=2)
    official = suite_to_official(reference.state_dict())
    trainable = [k for k in official if "lora" in k]  # the official name rule
    torch.save({k: official[k] for k in trainable}, tmp_path / "spt_lora.pth")
    sam_state = {
        k: t for k, t in official.items() if "lora" not in k and not k.startswith("draft_decoder.")
    }
    torch.save(sam_state, tmp_path / "sam_tiny.pth")

    model = load_official_spt(
        tmp_path / "spt_lora.pth", "tiny", sam_checkpoint=tmp_path / "sam_tiny.pth"
    )
    got, want = model.state_dict(), reference.state_dict()
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key

    with pytest.raises(SuiteError, match="only part of the model.*sam_checkpoint"):
        load_official_spt(tmp_path / "spt_lora.pth", "tiny")


def test_files_that_are_not_official_spt_checkpoints(tmp_path):
    with pytest.raises(SuiteError, match="not found"):
        load_official_spt(tmp_path / "absent.pth", "tiny")

    model = randomised_tiny()
    torch.save(model.state_dict(), tmp_path / "suite_layout.pth")
    with pytest.raises(SuiteError, match="not an official SPT checkpoint.*suite's own layout"):
        load_official_spt(tmp_path / "suite_layout.pth", "tiny")

    sam_only = {k: t for k, t in suite_to_official(model.state_dict()).items() if "lora" not in k}
    torch.save(sam_only, tmp_path / "sam.pth")
    with pytest.raises(SuiteError, match="not an official SPT checkpoint"):
        load_official_spt(tmp_path / "sam.pth", "tiny")

    torch.save(suite_to_official(model.state_dict()), tmp_path / "spt_tiny.pth")
    with pytest.raises(SuiteError, match="backbone vit_b"):
        load_official_spt(tmp_path / "spt_tiny.pth", "vit_b")


def test_odd_qkv_lora_rows_are_refused():
    with pytest.raises(SuiteError, match="two equal groups"):
        official_to_suite({"image_encoder.blocks.0.attn.qkv.lora_A": torch.zeros(5, 64)})
