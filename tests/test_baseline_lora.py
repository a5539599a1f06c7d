"""The peft LoRA baseline on tiny SAM: targets and counts, step-0 identity with zero-shot SAM,
the split q/k/v layer, training, every prompt mode, and both checkpoint formats."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from segment_anything import sam_model_registry
from torch import nn

from baselines.lora import SplitQKV, lora_target_pattern, split_encoder_qkv
from spt.cli import main
from spt.errors import SuiteError
from spt.harness.method import Method, TrainingSample, build_method
from spt.harness.prompts import DEFAULT_PROMPT_MODES, build_prompt
from spt.sam import build_sam, get_spec
from spt.sam.backbones import SAM_PIXEL_MEAN, SAM_PIXEL_STD

TINY = get_spec("tiny")
LOW_RES = TINY.low_res_size


# --- helpers shared with tests/test_baseline_adapter.py ------------------------------------------


def synthetic_samples(count: int, seed: int = 0) -> list[TrainingSample]:
    """``count`` 128 px images with one dark elliptic defect each, box prompts, fixed keys."""
    rng = np.random.default_rng(seed)
    size = TINY.image_size
    samples = []
    for index in range(count):
        mask = np.zeros((size, size), np.uint8)
        center = tuple(int(c) for c in rng.integers(40, 88, size=2))
        axes = tuple(int(a) for a in rng.integers(10, 24, size=2))
        cv2.ellipse(mask, center, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
        image = np.clip(rng.normal(140, 10, size=(size, size, 3)), 0, 255)
        image[mask > 0] -= 70
        image_uint8 = image.clip(0, 255).astype(np.uint8)
        planes = torch.from_numpy(image_uint8).permute(2, 0, 1)[None].float()
        mean = torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1)
        image_id = f"syn/{index}"
        prompt = build_prompt("box", mask.astype(np.float32), seed, image_id, LOW_RES)
        target = torch.from_numpy((mask > 0).astype(np.float32))[None, None]
        samples.append(
            TrainingSample(
                image_id, (planes - mean) / std, image_uint8, target, prompt, 1000 + index
            )
        )
    return samples


def final_logits(method: Method, sample: TrainingSample) -> torch.Tensor:
    with torch.no_grad():
        return method.decode(method.encode(sample.image), sample.prompt)["final"]


def train_steps(method: Method, samples, steps: int, lr: float) -> list[float]:
    """Full-batch Adam steps on ``samples``; the loss before each step."""
    optimizer = torch.optim.Adam(list(method.trainable_parameters()), lr=lr)
    method.network.train()
    history = []
    for _ in range(steps):
        loss = method.training_losses(samples)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    method.network.eval()
    return history


def amplify_decoder(method: Method, gain: float = 30.0) -> None:
    """Scale the last layer of SAM's hypernetwork MLPs by ``gain`` (in place).

    A randomly initialised tiny decoder is nearly silent (logit std ~0.03, against O(10) for a
    pretrained SAM) and its output upscaling is layer-normalised, so encoder-side tuning alone
    can hardly move its loss. Louder logits make the training tests measure the method, not that
    artefact of random weights.
    """
    with torch.no_grad():
        for mlp in method.sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(gain)
            mlp.layers[-1].bias.mul_(gain)


def perturb_trainable(method: Method, seed: int = 5) -> None:
    """Set every trainable tensor to random values, so outputs depend on all of them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def assert_trains_and_evaluates(name: str, params: dict, prepared, tmp_path) -> None:
    """`spt train` for one epoch, then `spt evaluate --trained` with every prompt mode."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"methods": {name: params}}))
    common = ["--params", str(params_file), "--method", name, "--backbone", "tiny"]
    common += ["--datasets", "mtd_twin", "--prepared-root", str(prepared), "--no-progress"]
    train_out = tmp_path / "train"
    assert main(["train", *common, "--out", str(train_out), "--epochs", "1", "--limit", "3"]) == 0
    trained = train_out / name / "tiny" / "trained.pt"
    eval_out = tmp_path / "eval"
    args = ["evaluate", *common, "--out", str(eval_out), "--trained", str(trained)]
    assert main([*args, "--limit", "2"]) == 0
    records = pd.read_parquet(eval_out / name / "tiny" / "records.parquet")
    assert set(records["prompt_mode"]) == set(DEFAULT_PROMPT_MODES)
    assert set(records["method"]) == {name} and (records["status"] == "ok").any()


# --- LoRA ----------------------------------------------------------------------------------------


def lora_count(spec, rank: int, targets: str, decoder: bool) -> int:
    """Independent formula: rank * (in + out) per adapted Linear, summed over the layers."""
    dim, c = spec.encoder_dim, spec.prompt_dim
    per_block = rank * (dim + 3 * dim) if targets == "qkv" else 2 * rank * (dim + dim)
    total = spec.encoder_depth * per_block
    if decoder:
        cross = c // 2  # SAM's two-way cross attentions project to half width
        per_layer = 2 * rank * (c + c) + 2 * 2 * rank * (c + cross)  # self + two cross attns
        total += 2 * per_layer + 2 * rank * (c + cross)  # two layers + final attention
    return total


@pytest.mark.parametrize(
    "params",
    [{}, {"targets": "qv"}, {"targets": "qkv", "decoder": True}, {"targets": "qv", "rank": 3}],
)
def test_trainable_count_matches_formula_and_only_lora_trains(params):
    method = build_method("lora", "tiny", params=params)
    expected = lora_count(
        TINY, params.get("rank", 8), params.get("targets", "qkv"), params.get("decoder", False)
    )
    assert method.trainable_parameter_count() == expected
    names = [n for n, p in method.network.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    decoder_lora = [n for n in names if "mask_decoder" in n]
    assert bool(decoder_lora) == params.get("decoder", False)
    if params.get("targets") == "qv":
        assert not any(".qkv.k." in n for n in names) and any(".qkv.v." in n for n in names)


@pytest.mark.parametrize("name", ["lora", "adapter"])
def test_initial_weights_depend_on_init_seed_only(name):
    torch.manual_seed(123)  # the global RNG must not matter, and must be left as it was
    before = torch.get_rng_state()
    first = build_method(name, "tiny", params={"init_seed": 1}).trained_state()
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)
    again = build_method(name, "tiny", params={"init_seed": 1}).trained_state()
    other = build_method(name, "tiny", params={"init_seed": 2}).trained_state()
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_vit_b_counts_on_the_meta_device():
    spec = get_spec("vit_b")
    for targets in ("qkv", "qv"):
        for decoder in (False, True):
            with torch.device("meta"):
                sam = sam_model_registry["vit_b"]()
                if targets == "qv":
                    split_encoder_qkv(sam.image_encoder)
                pattern = lora_target_pattern(targets, decoder)
                model = get_peft_model(sam, LoraConfig(r=8, lora_alpha=1, target_modules=pattern))
            count = sum(p.numel() for p in model.parameters() if p.requires_grad)
            assert count == lora_count(spec, 8, targets, decoder)
    assert lora_count(spec, 8, "qv", True) == 342_016


def test_split_qkv_equals_the_fused_layer_exactly():
    fused = build_sam("tiny", seed=3).image_encoder.blocks[0].attn.qkv
    split = SplitQKV(fused)
    x = torch.randn(2, 8, 8, fused.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(split(x), fused(x))
    assert [type(getattr(split, p)) for p in "qkv"] == [nn.Linear] * 3
    with pytest.raises(ValueError, match="3\\*dim"):
        SplitQKV(nn.Linear(4, 8))


@pytest.mark.parametrize("params", [{}, {"targets": "qv", "decoder": True}])
def test_step_zero_equals_zero_shot_sam(params):
    sample = synthetic_samples(1, seed=2)[0]
    lora = build_method("lora", "tiny", params={**params, "init_seed": 4})
    zero_shot = build_method("zero_shot", "tiny", params={"init_seed": 4})
    assert torch.equal(final_logits(lora, sample), final_logits(zero_shot, sample))
    perturb_trainable(lora)  # the LoRA layers are on the path: a change moves the output
    assert not torch.allclose(final_logits(lora, sample), final_logits(zero_shot, sample))


def test_gradients_reach_exactly_the_lora_tensors():
    method = build_method("lora", "tiny", params={"targets": "qv", "decoder": True})
    losses = method.training_losses(synthetic_samples(2))
    assert set(losses) == {"loss", "bce", "dice"}
    losses["loss"].backward()
    with_grad = {n for n, p in method.network.named_parameters() if p.grad is not None}
    trainable = {n for n, p in method.network.named_parameters() if p.requires_grad}
    assert with_grad == trainable


# Encoder-only LoRA moves the loss less than LoRA that reaches the decoder too.
@pytest.mark.parametrize(
    ("params", "lr", "ratio"),
    [({"targets": "qkv"}, 3e-2, 0.96), ({"targets": "qv", "decoder": True}, 3e-2, 0.85)],
)
def test_a_few_steps_lower_the_training_loss(params, lr, ratio):
    method = build_method("lora", "tiny", params={**params, "loss_points": 1024})
    amplify_decoder(method)
    samples = synthetic_samples(2)
    history = train_steps(method, samples, steps=10, lr=lr)
    after = method.training_losses(samples)["loss"].item()
    assert after < ratio * history[0], (history, after)


def test_every_prompt_mode_decodes():
    method = build_method("lora", "tiny", params={"targets": "qv"})
    sample = synthetic_samples(1, seed=7)[0]
    resized = sample.target[0, 0].numpy() * 255.0
    state = method.encode(sample.image)
    for mode in DEFAULT_PROMPT_MODES:
        prompt = build_prompt(mode, resized, 0, sample.image_id, LOW_RES)
        logits = method.decode(state, prompt)
        assert list(logits) == ["final"]
        assert logits["final"].shape == (prompt.count, 1, LOW_RES, LOW_RES)
        assert torch.isfinite(logits["final"]).all()


def test_trained_state_round_trip():
    params = {"targets": "qv", "decoder": True, "rank": 4}
    method = build_method("lora", "tiny", params=params)
    perturb_trainable(method)
    state = method.trained_state()
    assert sum(t.numel() for t in state.values()) == method.trainable_parameter_count()
    fresh = build_method("lora", "tiny", params=params)
    sample = synthetic_samples(1)[0]
    assert not torch.equal(final_logits(fresh, sample), final_logits(method, sample))
    fresh.load_trained_state(state)
    assert torch.equal(final_logits(fresh, sample), final_logits(method, sample))
    other = build_method("lora", "tiny", params={**params, "decoder": False})
    with pytest.raises(SuiteError, match="does not fit method 'lora'"):
        other.load_trained_state(state)
    resized = build_method("lora", "tiny", params={**params, "rank": 2})
    with pytest.raises(SuiteError, match="other shapes"):
        resized.load_trained_state(state)


@pytest.mark.parametrize("targets", ["qkv", "qv"])
def test_peft_adapter_saves_and_loads_back(tmp_path, targets):
    params = {"targets": targets, "decoder": True, "rank": 4, "alpha": 2}
    method = build_method("lora", "tiny", params=params)
    perturb_trainable(method)
    folder = method.save_peft(tmp_path / "adapter")
    assert (folder / "adapter_config.json").is_file()
    assert (folder / "adapter_model.safetensors").is_file()
    sample = synthetic_samples(1)[0]
    expected = final_logits(method, sample)

    # Through the method's params, as `spt evaluate` would load it.
    loaded = build_method("lora", "tiny", params={**params, "peft_adapter": str(folder)})
    assert torch.equal(final_logits(loaded, sample), expected)
    assert loaded.trainable_parameter_count() == method.trainable_parameter_count()

    # With peft alone on a plain SAM (split first for q/v-only, whose names contain the split).
    sam = build_sam("tiny", seed=0)
    if targets == "qv":
        split_encoder_qkv(sam.image_encoder)
    plain = PeftModel.from_pretrained(sam, str(folder))
    with torch.no_grad():
        assert torch.equal(
            plain.base_model.model.image_encoder(sample.image), method.encode(sample.image)
        )


def test_peft_adapter_mismatch_and_bad_params_are_suite_errors(tmp_path):
    method = build_method("lora", "tiny", params={"rank": 4})
    folder = method.save_peft(tmp_path / "adapter")
    with pytest.raises(SuiteError, match="r is 4 but"):
        build_method("lora", "tiny", params={"rank": 8, "peft_adapter": str(folder)})
    with pytest.raises(SuiteError, match="target_modules"):
        build_method(
            "lora", "tiny", params={"rank": 4, "targets": "qv", "peft_adapter": str(folder)}
        )
    with pytest.raises(SuiteError, match="no adapter_config.json"):
        build_method("lora", "tiny", params={"peft_adapter": str(tmp_path / "missing")})
    with pytest.raises(
        SuiteError, match=r"methods\.lora\.targets must be one of qkv, qv, got 'qk'"
    ):
        build_method("lora", "tiny", params={"targets": "qk"})
    with pytest.raises(SuiteError, match=r"methods\.lora\.rank must be an integer >= 1"):
        build_method("lora", "tiny", params={"rank": 0})
    with pytest.raises(SuiteError, match=r"methods\.lora\.alpha must be a number > 0"):
        build_method("lora", "tiny", params={"alpha": -1})


def test_trains_and_evaluates_through_spt_train_and_evaluate(synthetic_prepared, tmp_path):
    assert_trains_and_evaluates(
        "lora", {"targets": "qv", "loss_points": 1024}, synthetic_prepared, tmp_path
    )
