"""Pretraining the tiny SAM on natural scenes: scenes, samples, batched decoding, training,
checkpoint, resume, idempotence and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from spt.cli import main
from spt.errors import SuiteError
from spt.harness.preprocess import InputFrame, image_to_input
from spt.harness.prompts import build_prompt
from spt.pretrain.model import PromptedSam, decode, decode_batch
from spt.pretrain.natural import MIN_VISIBLE_PIXELS, natural_scene
from spt.pretrain.train import (
    CHECKPOINT_NAME,
    LOG_NAME,
    PretrainConfig,
    collate,
    make_sample_builder,
    normalise,
    pretrain,
    probe_quality,
)
from spt.sam import build_sam, load_sam

# A run small enough for a test: 8 scenes, 2 steps of 4 per epoch, tiny probes.
SMALL = {
    "scenes": 8,
    "epochs": 3,
    "batch_size": 4,
    "lr_step_epochs": 10,
    "warmup_steps": 0,
    "heldout_scenes": 2,
    "industrial_probe_images": 2,
}


pytestmark = pytest.mark.usefixtures("one_thread")  # bitwise comparisons below


def _scenes_equal(a, b) -> bool:
    return np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)


def test_scene_is_a_pure_function_of_seed_and_index():
    assert _scenes_equal(natural_scene(0, 7), natural_scene(0, 7))
    assert not _scenes_equal(natural_scene(0, 7), natural_scene(1, 7))
    assert not _scenes_equal(natural_scene(0, 7), natural_scene(0, 8))


def test_masks_are_visible_disjoint_and_non_empty():
    for index in range(12):
        scene = natural_scene(3, index)
        assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
        assert scene.masks.dtype == bool and scene.masks.shape[1:] == (128, 128)
        assert scene.masks.shape[0] == len(scene.shapes) >= 1
        assert scene.masks.sum(axis=0).max() == 1  # no pixel belongs to two objects
        areas = scene.masks.sum(axis=(1, 2))
        assert areas.min() > 0
        if scene.masks.shape[0] > 1:
            assert areas.min() >= MIN_VISIBLE_PIXELS


def test_objects_stand_out_from_their_surroundings():
    # The source domain's point: objects differ from what surrounds them (unlike faint defects).
    import cv2

    contrasts = []
    for index in range(10):
        scene = natural_scene(0, index)
        image = scene.image.astype(np.float32)
        for mask in scene.masks:
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
            ring &= ~mask
            if ring.sum() > 20:
                inside, around = image[mask].mean(0), image[ring].mean(0)
                contrasts.append(float(np.abs(inside - around).max()))
    assert np.median(contrasts) > 25


def test_normalise_equals_the_harness_input_protocol():
    image = natural_scene(0, 1).image
    expected = image_to_input(image, InputFrame.for_image(128, 128, 128))
    assert torch.allclose(normalise(image), expected, atol=1e-5)


def test_samples_are_pure_and_vary_with_epoch():
    make_sample = make_sample_builder(PretrainConfig(**SMALL), 128, 32)
    a, b = make_sample(2, 0), make_sample(2, 0)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert a["prompt"].equals(b["prompt"]) and a["key"] == b["key"]
    varied = [make_sample(i, 1) for i in range(6)]
    same = [make_sample(i, 0) for i in range(6)]
    assert any(
        not (x["prompt"].equals(y["prompt"]) and torch.equal(x["target"], y["target"]))
        for x, y in zip(varied, same, strict=True)
    )
    for sample in same:  # the target is one of the scene's objects, prompted inside it
        assert sample["target"].shape == (1, 1, 128, 128) and sample["target"].sum() > 0


def test_decode_batch_equals_decoding_one_by_one():
    sam = build_sam("tiny", seed=1)
    scene = natural_scene(0, 4)
    resized = np.where(scene.masks[0], 255.0, 0.0).astype(np.float32)
    modes = ["box", "points-1", "coarse", "points-3", "box", "points-pn"]
    prompts = [build_prompt(m, resized, 0, f"s{i}", 32) for i, m in enumerate(modes)]
    with torch.no_grad():
        embeddings = sam.image_encoder(torch.randn(len(modes), 3, 128, 128))
        logits, scores = decode_batch(sam, embeddings, prompts)
        for i, prompt in enumerate(prompts):
            one_logits, one_score = decode(sam, embeddings[i : i + 1], prompt)
            assert torch.allclose(logits[i], one_logits[0], atol=1e-5)
            assert torch.allclose(scores[i], one_score[0], atol=1e-5)
    assert logits.shape == (len(modes), 1, 32, 32) and scores.shape == (len(modes), 1)


def _batch_loss(model, config) -> float:
    make_sample = make_sample_builder(config, 128, 32)
    with torch.no_grad():
        return float(model(collate([make_sample(i, 0) for i in range(config.scenes)]))["loss"])


def test_short_pretraining_learns_saves_a_loadable_sam_and_is_idempotent(tmp_path):
    config = PretrainConfig(**SMALL)
    before = _batch_loss(PromptedSam(build_sam("tiny", seed=0), 1024, 1.0), config)
    log = pretrain(config, tmp_path, progress=False)
    assert log["finished"] and len(log["history"]) == config.epochs
    checkpoint = tmp_path / CHECKPOINT_NAME
    sam = load_sam("tiny", checkpoint)
    after = _batch_loss(PromptedSam(sam, 1024, 1.0), config)
    assert after < before
    # The saved file reproduces the trained model exactly: same probe numbers as the log.
    assert probe_quality(sam, config) == log["quality"]
    assert set(log["quality"]) == {"natural_heldout", "industrial_twins"}
    # Same params again: nothing is redone.
    stamp = checkpoint.stat().st_mtime_ns
    again = pretrain(config, tmp_path, progress=False)
    assert again["skipped"] and checkpoint.stat().st_mtime_ns == stamp
    # Other params: not up to date any more.
    other = PretrainConfig(**{**SMALL, "epochs": 1})
    assert not pretrain(other, tmp_path, progress=False).get("skipped")


def test_resume_after_a_stop_equals_an_uninterrupted_run(tmp_path):
    config = PretrainConfig(**{**SMALL, "epochs": 2, "industrial_probe_images": 0})
    pretrain(config, tmp_path / "straight", progress=False)
    stopped = pretrain(config, tmp_path / "resumed", stop_after_epochs=1, progress=False)
    assert not stopped["finished"] and not (tmp_path / "resumed" / CHECKPOINT_NAME).exists()
    pretrain(config, tmp_path / "resumed", resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(tmp_path / "resumed" / CHECKPOINT_NAME, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_rejects_bad_params():
    with pytest.raises(SuiteError, match="pretrain.scene is not a known setting"):
        PretrainConfig.from_params({"scene": 10})
    with pytest.raises(SuiteError, match="unknown prompt mode"):
        PretrainConfig.from_params({"prompt_modes": ["boxes"]})
    with pytest.raises(SuiteError, match="scenes"):
        PretrainConfig.from_params({}, scenes=0)
    assert PretrainConfig.from_params({"epochs": 5}, epochs=2, seed=None).epochs == 2


def test_cli_reads_params_overrides_and_reports(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    section = {**SMALL, "epochs": 5, "industrial_probe_images": 0}
    params.write_text(yaml.safe_dump({"pretrain": section}))
    out = tmp_path / "pretrain"
    argv = ["pretrain", "--params", str(params), "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert str(out / CHECKPOINT_NAME) in printed and "natural_heldout: box" in printed
    log = (out / LOG_NAME).read_text()
    assert '"epochs": 1' in log  # the flag overrode params
    assert main([*argv, "--no-progress"]) == 0
    assert "up to date" in capsys.readouterr().out
    params.write_text(yaml.safe_dump({"pretrain": {"epoch": 1}}))
    assert main([*argv, "--no-progress"]) == 2
    assert "pretrain.epoch is not a known setting" in capsys.readouterr().err
