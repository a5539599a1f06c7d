"""WeSAM baseline: LoRA placement, the three roles, the loss terms, training and the harness."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import baselines.wesam as wesam
from spt.errors import SuiteError
from spt.harness.evaluate import EvaluationConfig, evaluate
from spt.harness.method import TrainingSample, build_method
from spt.harness.prompts import DEFAULT_PROMPT_MODES, build_prompt
from spt.harness.records import read_records
from spt.sam import build_sam, get_spec, load_sam
from spt.training.samples import normalise
from tests.harness_synthetic import write_dataset

SIZE = 128  # tiny backbone input
LOW_RES = 32


def defect_sample(key: int, regions: int = 2, mode: str = "box") -> TrainingSample:
    """A synthetic (S,S) training sample with one or two dark defect regions."""
    rng = np.random.default_rng(1000 + key)
    image = np.clip(110 + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(mask, (32, 34), 13, 1, -1)
    if regions == 2:
        cv2.rectangle(mask, (72, 70), (104, 96), 1, -1)
    image[mask > 0] = (image[mask > 0].astype(int) - 60).clip(0, 255).astype(np.uint8)
    image_id = f"syn/img{key}"
    return TrainingSample(
        image_id=image_id,
        image=normalise(image),
        image_uint8=image,
        target=torch.from_numpy(mask.astype(np.float32))[None, None],
        prompt=build_prompt(mode, mask.astype(np.float32) * 255, 0, image_id, LOW_RES),
        key=key,
    )


def perturb_lora(method: wesam.WeSAM, seed: int = 0, scale: float = 0.05) -> None:
    """Give every LoRA tensor (B included, which starts at 0) random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in method.trainable_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


@pytest.fixture
def method() -> wesam.WeSAM:
    return build_method("wesam", "tiny")


def test_trainable_count_is_rank_times_in_plus_out_for_q_and_v(method):
    spec = get_spec("tiny")
    per_projection = 4 * (spec.encoder_dim + spec.encoder_dim)  # A (r, in) + B (out, r)
    assert method.trainable_parameter_count() == spec.encoder_depth * 2 * per_projection
    names = {n for n, p in method.network.named_parameters() if p.requires_grad}
    assert names and all("image_encoder" in n and ".lora_" in n for n in names)
    assert method.trainable_parameter_count() == 2048


@pytest.mark.parametrize(
    ("backbone", "expected"), [("vit_b", 147_456), ("vit_l", 393_216), ("vit_h", 655_360)]
)
def test_published_backbone_counts_on_meta(backbone, expected, monkeypatch):
    def build_on_meta(name, checkpoint, device, seed):
        with torch.device("meta"):
            return build_sam(name, seed)

    monkeypatch.setattr(wesam, "load_sam", build_on_meta)
    method = wesam.WeSAM(backbone, device="meta", params={"lora_rank": 4})
    spec = get_spec(backbone)
    assert expected == spec.encoder_depth * 2 * 4 * (2 * spec.encoder_dim)
    assert method.trainable_parameter_count() == expected


def test_contrastive_term_needs_two_instances(method):
    perturb_lora(method)
    two = method.training_losses([defect_sample(3, regions=2)])
    one = method.training_losses([defect_sample(3, regions=1)])
    assert two["contrastive"].item() > 0
    assert one["contrastive"].item() == 0.0
    # Not a constant: the teacher side carries gradient into the shared LoRA weights.
    two["contrastive"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.trainable_parameters())


def test_a_few_adam_steps_lower_the_training_loss(method):
    batch = [defect_sample(5, regions=2), defect_sample(6, regions=1, mode="points-3")]
    optimiser = torch.optim.Adam(method.trainable_parameters(), lr=1e-3)
    history = []
    for _ in range(6):
        losses = method.training_losses(batch)
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        history.append(losses["loss"].item())
    with torch.no_grad():
        final = method.training_losses(batch)["loss"].item()
    assert np.isfinite(history).all()
    assert final < history[0] - 1e-3
    assert np.mean(history[-2:] + [final]) < np.mean(history[:3])


def test_losses_are_the_documented_weighted_sum(method):
    perturb_lora(method, seed=4)
    weights = {"focal": 3.0, "dice": 0.5, "iou": 2.0, "anchor": 0.0, "contrastive": 4.0}
    method.loss_weights = dict(weights)
    losses = method.training_losses([defect_sample(7), defect_sample(8, regions=1)])
    expected = sum(w * losses[t] for t, w in weights.items())
    assert set(losses) == {*weights, "loss"}
    torch.testing.assert_close(losses["loss"], expected)


def test_same_key_same_losses_and_keys_change_the_views(method):
    perturb_lora(method, seed=1)
    sample = defect_sample(11, mode="points-pn")
    first = method.training_losses([sample])
    second = build_method("wesam", "tiny")
    second.load_trained_state(method.trained_state())
    again = second.training_losses([sample])
    for term in first:
        assert torch.equal(first[term], again[term]), term
    views = [method.views(defect_sample(k)) for k in range(6)]
    assert len({(v.flips, tuple(op.name for op in v.strong_ops)) for v in views}) > 1


def test_gradients_reach_only_the_lora_tensors(method):
    perturb_lora(method, seed=2)
    method.training_losses([defect_sample(12)])["loss"].backward()
    for name, parameter in method.network.named_parameters():
        if ".lora_" in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_anchor_is_plain_sam_after_the_lora_weights_change(method):
    image = defect_sample(13).image
    plain = load_sam("tiny", seed=0)
    perturb_lora(method, seed=3, scale=0.2)
    with torch.no_grad():
        expected = plain.image_encoder(image)
        assert torch.equal(method.encode_anchor(image), expected)
        assert not torch.allclose(method.encode(image), expected, atol=1e-4)
    # The LoRA layers are back in place after the anchor pass, and after an error inside it.
    assert all(isinstance(b.attn.qkv, wesam.LoRAFusedQKV) for b in method.sam.image_encoder.blocks)
    with pytest.raises(RuntimeError), wesam.lora_bypassed(method.sam.image_encoder):
        raise RuntimeError("inside")
    assert all(isinstance(b.attn.qkv, wesam.LoRAFusedQKV) for b in method.sam.image_encoder.blocks)


def test_untrained_wesam_decodes_every_mode_like_sam(method):
    zero_shot = build_method("zero_shot", "tiny")
    sample = defect_sample(14)
    mask = sample.target[0, 0].numpy() * 255
    with torch.no_grad():
        state, reference = method.encode(sample.image), zero_shot.encode(sample.image)
        for mode in DEFAULT_PROMPT_MODES:
            for instances in (False, True):
                prompt = build_prompt(mode, mask, 0, sample.image_id, LOW_RES, instances=instances)
                logits = method.decode(state, prompt)["final"]
                assert logits.shape == (1 + instances, 1, LOW_RES, LOW_RES)
                # LoRA B starts at zero: before training WeSAM is zero-shot SAM.
                assert torch.equal(logits, zero_shot.decode(reference, prompt)["final"]), mode


def test_trained_state_round_trip(method, tmp_path):
    perturb_lora(method, seed=5)
    path = tmp_path / "wesam.pt"
    torch.save(method.trained_state(), path)
    loaded = build_method("wesam", "tiny")
    loaded.load_trained_state(torch.load(path, weights_only=True))
    sample = defect_sample(15)
    with torch.no_grad():
        a = method.decode(method.encode(sample.image), sample.prompt)["final"]
        b = loaded.decode(loaded.encode(sample.image), sample.prompt)["final"]
    assert torch.equal(a, b)
    state = method.trained_state()
    with pytest.raises(SuiteError, match="does not fit"):
        loaded.load_trained_state({k: v for k, v in list(state.items())[1:]})
    name = next(iter(state))
    with pytest.raises(SuiteError, match="expected"):
        loaded.load_trained_state({**state, name: state[name][:1]})


def test_instance_prompts_fall_back_to_box_and_keep_the_largest():
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:40, 10:40] = True  # 900 px
    mask[60:62, 60:62] = True  # 4 px: too small for points-5
    mask[90:100, 90:110] = True  # 200 px
    prompts = wesam.instance_prompts(mask, "points-5", 7, "x", LOW_RES, max_instances=3)
    assert [p.mode for p in prompts] == ["points-5", "box", "points-5"]
    assert prompts[1].boxes.tolist() == [[60.0, 60.0, 61.0, 61.0]]
    groups = wesam.stack_prompts(prompts)
    assert [(g.mode, g.count) for g in groups] == [("points-5", 2), ("box", 1)]
    capped = wesam.instance_prompts(mask, "box", 7, "x", LOW_RES, max_instances=2)
    assert [p.boxes[0].tolist() for p in capped] == [[10, 10, 39, 39], [90, 90, 109, 99]]
    with pytest.raises(SuiteError, match="no foreground"):
        wesam.instance_prompts(np.zeros_like(mask), "box", 7, "x", LOW_RES, 3)


def test_bad_params_are_one_line_errors():
    with pytest.raises(SuiteError, match="contrastive_form"):
        build_method("wesam", "tiny", params={"contrastive_form": "triplet"})
    with pytest.raises(SuiteError, match=r"methods\.wesam\.max_instances must be an integer >= 1"):
        build_method("wesam", "tiny", params={"max_instances": 0})


def test_trains_and_evaluates_through_the_suite(tmp_path: Path):
    from spt.training.engine import TrainConfig
    from spt.training.run import train_method, training_rows
    from spt.training.samples import SampleOptions

    root = tmp_path / "prepared"
    write_dataset(root, "synA", [("two_regions", 96, 96), ("blob", 80, 100)], seed=3)
    method = build_method("wesam", "tiny")
    trained, result = train_method(
        method, training_rows(root, ["synA"]), TrainConfig(epochs=1, lr=1e-3),
        SampleOptions(lsj_prob=0.0), tmp_path / "train", progress=False,
    )  # fmt: skip
    assert trained.is_file() and np.isfinite(result.history[-1]["loss"])
    config = EvaluationConfig(
        method="wesam", backbone="tiny", datasets=("synA",), prepared_roots=(str(root),),
        out_root=str(tmp_path / "eval"), trained=str(trained),
    )  # fmt: skip
    records = read_records(evaluate(config, progress=False))
    assert set(records["prompt_mode"]) == set(DEFAULT_PROMPT_MODES)
    assert (records["status"] == "ok").all() and records["iou"].between(0, 1).all()
