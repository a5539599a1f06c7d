"""Bad input to `spt train` / `spt pretrain`: config values, damaged resume state, images that
admit no prompt, image/mask size mismatches, blank manifest paths, damaged pretraining outputs.
Each ends in a one-line SuiteError or a counted, reported skip; never a traceback."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spt.cli import main
from spt.data.manifest import read_manifest, write_manifest
from spt.errors import SuiteError
from spt.pretrain.train import CHECKPOINT_NAME, LOG_NAME, PretrainConfig, finished_log, pretrain
from spt.sam import get_spec
from spt.training.engine import TrainConfig
from spt.training.run import training_rows
from spt.training.samples import SampleOptions, TrainingSet
from tests.harness_synthetic import write_dataset
from tests.toy_training import run

# --------------------------------------------------------------------------------------------
# Config values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", "ten", "train.epochs / --epochs: expected an integer >= 1, got 'ten'"),
        ("epochs", 0, "train.epochs / --epochs: expected an integer >= 1, got 0"),
        ("epochs", -1, "train.epochs / --epochs"),
        ("epochs", True, "train.epochs / --epochs: expected an integer >= 1, got True"),
        ("epochs", 2.5, "train.epochs / --epochs: expected an integer"),
        ("batch_size", 0, "train.batch_size / --batch-size: expected an integer >= 1"),
        ("batch_size", -2, "train.batch_size / --batch-size"),
        ("lr", "fast", "train.lr: expected a number > 0, got 'fast'"),
        ("lr", "1e-3", "got '1e-3' (text, not a number: write 0.001)"),
        ("lr", -1.0, "train.lr: expected a number > 0, got -1.0"),
        ("lr", 0, "train.lr: expected a number > 0"),
        ("lr", float("nan"), "train.lr: expected a number > 0, got nan"),
        ("weight_decay", -0.1, "train.weight_decay: expected a number >= 0"),
        ("lr_step_epochs", 0, "train.lr_step_epochs: expected an integer >= 1"),
        ("lr_gamma", 0.0, "train.lr_gamma: expected a number > 0"),
        ("warmup_steps", -1, "train.warmup_steps: expected an integer >= 0"),
        ("grad_clip", -1.0, "train.grad_clip: expected a number >= 0 (or null: off)"),
        ("grad_clip", "x", "train.grad_clip"),
        ("seed", "abc", "train.seed / --seed: expected an integer >= 0, got 'abc'"),
    ],
)
def test_train_config_names_the_bad_key(key, value, message):
    with pytest.raises(SuiteError) as caught:
        TrainConfig(**{key: value})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_train_config_accepts_good_values():
    TrainConfig(epochs=1, batch_size=1, lr=1, weight_decay=0, grad_clip=None, warmup_steps=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt_modes": ()}, "train.prompt_modes is empty"),
        ({"hflip": 2.0}, "train.augment.hflip: expected a probability in [0, 1]"),
        ({"lsj_prob": -0.5}, "train.augment.lsj_prob"),
        ({"lsj_scale": (2.0, 1.0)}, "train.augment.lsj_scale"),
        ({"lsj_scale": (0.0, 1.0)}, "train.augment.lsj_scale"),
    ],
)
def test_sample_options_name_the_bad_key(options, message):
    with pytest.raises(SuiteError, match=message.replace("[", r"\[").replace(".", r"\.")):
        SampleOptions(**options)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "-1"], "error: --epochs must be an integer >= 1, got -1"),
        (["--epochs", "0"], "error: --epochs must be an integer >= 1, got 0"),
        (["--batch-size", "0"], "error: --batch-size must be an integer >= 1"),
    ],
)
def test_train_cli_refuses_bad_flags(tmp_path, capsys, argv, message):
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    out = tmp_path / "out"
    code = main(
        ["train", "--params", str(params), "--datasets", "x", "--out", str(out), *argv]
    )  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.startswith(message)
    assert not out.exists()  # nothing trained, nothing saved


def test_train_cli_refuses_bad_params_values(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: ten\n")
    argv = ["train", "--params", str(params), "--datasets", "x", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "train.epochs must be an integer >= 1, got 'ten'" in capsys.readouterr().err
    params.write_text("train:\n  lr: fast\n")
    assert main(argv) == 2
    assert "train.lr must be a number in (0, 10], got 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("section", "overrides", "message"),
    [
        ({"epochs": "x"}, {}, "pretrain.epochs must be an integer >= 1, got 'x'"),
        ({}, {"epochs": -1}, "--epochs must be an integer >= 1, got -1"),
        ({}, {"scenes": -5}, "--scenes must be an integer >= 1, got -5"),
        ({"lr": "x"}, {}, "pretrain.lr must be a number in (0, 10], got 'x'"),
        ({"batch_size": 0}, {}, "pretrain.batch_size must be an integer >= 1, got 0"),
        ({"loss_points": 0}, {}, "pretrain.loss_points must be an integer >= 1"),
        ({"init_seed": "a"}, {}, "pretrain.init_seed must be an integer in [0, 4294967295]"),
        ({"prompt_modes": 3}, {}, "pretrain.prompt_modes must be a list of names"),
        ({"probe_modes": [3]}, {}, "pretrain.probe_modes must be a list of names"),
        (
            {"batch_size": 16},
            {"scenes": 8},
            "pretrain.batch_size 16 is larger than pretrain.scenes / --scenes 8; lower "
            "pretrain.batch_size",
        ),
        ([1], {}, "pretrain must be a mapping (key: value lines), got [1]"),
    ],
)
def test_pretrain_config_names_the_bad_key(section, overrides, message):
    with pytest.raises(SuiteError) as caught:
        PretrainConfig.from_params(section, **overrides)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Resume state
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "unreadable training state (EOFError)"),
        (np.random.default_rng(0).bytes(300), "unreadable training state"),
        (None, "not a training state written by `spt train`"),
    ],
)
def test_corrupt_state_is_a_one_line_error_and_is_kept(tmp_path, content, message):
    run(tmp_path, epochs=2, batch=2, stop_after=1)
    state = tmp_path / "state" / "last.pt"
    if content is None:
        torch.save({"weights": torch.zeros(1)}, state)
        content = state.read_bytes()
    else:
        state.write_bytes(content)
    with pytest.raises(SuiteError) as caught:
        run(tmp_path, epochs=2, batch=2, resume=True)
    text = str(caught.value)
    assert text.startswith(f"{state}: {message}") and "\n" not in text
    assert "rerun with --restart to start over (the file is then replaced)" in text
    assert state.read_bytes() == content  # never deleted or rewritten behind the user's back


def test_changed_params_hint_names_restart(tmp_path):
    run(tmp_path, epochs=2, batch=2, stop_after=1)
    with pytest.raises(SuiteError, match="other training params; rerun with --restart"):
        run(tmp_path, epochs=3, batch=2, resume=True)


# --------------------------------------------------------------------------------------------
# Training data: images that admit no prompt, size mismatches, blank paths
# --------------------------------------------------------------------------------------------


def _train_split(root, kinds) -> None:
    """A prepared dataset ``tr`` under ``root`` whose defect images are all in the train split."""
    manifest = write_dataset(root, "tr", kinds, extra_rows=False)
    frame = read_manifest(manifest)
    frame["split"] = "train"
    write_manifest(frame, manifest)


def _blank_mask(rows: pd.DataFrame, kind: str) -> None:
    """Overwrite the mask of the ``kind`` row with zeros: a stale mask the manifest still
    counts as a defect."""
    path = rows.loc[rows["defect_type"] == kind, "mask_path"].iloc[0]
    Image.fromarray(np.zeros_like(np.array(Image.open(path)))).save(path)


@pytest.fixture
def mixed(tmp_path):
    """Three usable images, one whose defect vanishes at 128 px, one with a stale empty mask."""
    _train_split(
        tmp_path / "prepared",
        [("blob", 64, 64), ("scratch", 64, 64), ("speck", 64, 64), ("vanishing", 400, 400),
         ("two_regions", 64, 64)],
    )  # fmt: skip
    rows = training_rows(tmp_path / "prepared", ["tr"])
    _blank_mask(rows, "two_regions")
    return tmp_path / "prepared", rows


def test_images_without_a_prompt_are_skipped_with_their_reason(mixed):
    _, rows = mixed
    dataset = TrainingSet(rows, get_spec("tiny"), SampleOptions(seed=0))
    reasons = dict(dataset.skipped)
    assert len(dataset) == 3 and len(reasons) == 2
    vanishing = rows.loc[rows["defect_type"] == "vanishing", "image_id"].iloc[0]
    empty = rows.loc[rows["defect_type"] == "two_regions", "image_id"].iloc[0]
    assert reasons[vanishing] == "defect vanishes when the mask is resized to 128x128"
    assert reasons[empty] == "mask is empty (no pixel above 128)"
    assert vanishing not in dataset.image_ids and empty not in dataset.image_ids
    for epoch in range(4):  # every kept sample builds in every epoch
        for index in range(len(dataset)):
            assert dataset(index, epoch).target.sum() > 0


def test_jitter_that_loses_the_defect_falls_back_and_is_counted(mixed):
    _, rows = mixed
    # A tiny scale makes the jittered speck vanish: the un-jittered sample is used instead.
    options = SampleOptions(seed=0, lsj_scale=(0.01, 0.01))
    dataset = TrainingSet(rows, get_spec("tiny"), options)
    speck = dataset.image_ids.index(rows.loc[rows["defect_type"] == "speck", "image_id"].iloc[0])
    first, again = dataset(speck, 0), dataset(speck, 0)
    assert first.target.sum() > 0 and torch.equal(first.target, again.target)
    assert first.prompt.equals(again.prompt)
    assert (dataset.image_ids[speck], 0) in dataset.jitter_fallbacks


def test_nothing_left_after_skipping_is_an_error(tmp_path):
    _train_split(tmp_path / "prepared", [("vanishing", 400, 400), ("vanishing", 300, 300)])
    rows = training_rows(tmp_path / "prepared", ["tr"])
    with pytest.raises(
        SuiteError, match="none of the 2 training images admits a prompt at 128x128"
    ):
        TrainingSet(rows, get_spec("tiny"), SampleOptions())


def test_train_reports_skipped_images_and_trains_on_the_rest(mixed, tmp_path, capsys):
    prepared, rows = mixed
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    out = tmp_path / "out"
    argv = [
        "train", "--params", str(params), "--method", "spt", "--backbone", "tiny",
        "--datasets", "tr", "--prepared-root", str(prepared), "--out", str(out),
        "--epochs", "1", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: skipped 2 of 5")]
    assert len(warning) == 1 and "defect vanishes when the mask is resized" in warning[0]
    folder = out / "spt" / "tiny"
    listed = pd.read_csv(folder / "skipped_images.csv")
    assert len(listed) == 2 and set(listed["image_id"]) <= set(rows["image_id"])
    blob = torch.load(folder / "trained.pt", weights_only=True)
    assert blob["skipped_images"] == 2


@pytest.mark.parametrize("size", [(50, 40), (1, 1)])
def test_image_and_mask_of_different_sizes_are_refused(tmp_path, size):
    _train_split(tmp_path / "prepared", [("blob", 64, 64), ("scratch", 96, 96)])
    rows = training_rows(tmp_path / "prepared", ["tr"])
    row = rows[rows["defect_type"] == "scratch"].iloc[0]
    if size == (1, 1):  # a 1x1 image next to its 96x96 mask
        Image.new("RGB", size).save(row["image_path"])
        what = f"image {row['image_path']} is 1x1 but its mask {row['mask_path']} is 96x96"
    else:
        Image.open(row["mask_path"]).resize(size).save(row["mask_path"])
        what = f"image {row['image_path']} is 96x96 but its mask {row['mask_path']} is 50x40"
    with pytest.raises(SuiteError) as caught:
        TrainingSet(rows, get_spec("tiny"), SampleOptions())
    assert str(caught.value) == f"{row['image_id']}: {what}; rerun `spt prepare`"


def test_blank_mask_path_names_the_manifest_row(tmp_path):
    manifest = write_dataset(tmp_path / "prepared", "tr", [("blob", 64, 64)], extra_rows=False)
    frame = read_manifest(manifest)
    frame["split"], frame["mask_path"] = "train", ""
    write_manifest(frame, manifest)
    image_id = frame["image_id"].iloc[0]
    with pytest.raises(SuiteError) as caught:
        training_rows(tmp_path / "prepared", ["tr"])
    assert str(caught.value) == (
        f"{manifest}: {image_id} has mask_pixels > 0 but no mask_path; rerun `spt prepare`"
    )


# --------------------------------------------------------------------------------------------
# Pretraining outputs
# --------------------------------------------------------------------------------------------

# One epoch of one step on 4 scenes, one held-out scene, no industrial probe.
TINY = {
    "scenes": 4,
    "epochs": 1,
    "batch_size": 4,
    "warmup_steps": 0,
    "heldout_scenes": 1,
    "industrial_probe_images": 0,
    "probe_modes": ("box",),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pretrain_corrupt_state_on_resume_is_a_one_line_error(tmp_path):
    config = PretrainConfig(**TINY)
    state = tmp_path / "state" / "last.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(SuiteError) as caught:
        pretrain(config, tmp_path, resume=True, progress=False)
    assert str(caught.value).startswith(f"{state}: unreadable training state")
    assert "rerun without --resume to start over" in str(caught.value)
    assert state.read_bytes() == b"not a checkpoint"


def test_pretrain_rerun_checks_the_checkpoint_and_the_log(tmp_path, capsys):
    config = PretrainConfig(**TINY)
    log = pretrain(config, tmp_path, progress=False)
    checkpoint = tmp_path / CHECKPOINT_NAME
    original = torch.load(checkpoint, weights_only=True)
    assert len(log["checkpoint_sha256"]) == 64
    assert pretrain(config, tmp_path, progress=False)["skipped"]

    checkpoint.write_bytes(b"\0" * 500)  # damaged: not up to date any more
    rebuilt = pretrain(config, tmp_path, resume=True, progress=False)
    assert not rebuilt.get("skipped")
    assert "not the checkpoint pretrain_log.json describes" in capsys.readouterr().err
    # With --resume the finished state/last.pt rebuilds the very same weights.
    again = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(original[k], again[k]) for k in original)
    assert pretrain(config, tmp_path, progress=False)["skipped"]

    # An older log without the sha256: the checkpoint must at least load.
    record = json.loads((tmp_path / LOG_NAME).read_text())
    del record["checkpoint_sha256"]
    (tmp_path / LOG_NAME).write_text(json.dumps(record))
    assert finished_log(config, tmp_path) is not None
    checkpoint.write_bytes(b"garbage")
    assert finished_log(config, tmp_path) is None

    for broken in ("[1]", "{not json"):
        (tmp_path / LOG_NAME).write_text(broken)
        assert finished_log(config, tmp_path) is None
        assert "treating the run as not finished" in capsys.readouterr().err
