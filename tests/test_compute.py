"""Precision (fp32 / bf16 / fp16 autocast, the fp16 loss scaler, fp32 losses and metrics), the
cost logs of training and evaluation, and the report's cost table filled from real logs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from spt.cli import main
from spt.errors import SuiteError
from spt.harness.compute import autocast, check_precision, in_fp32, peak_memory
from spt.harness.records import read_cost
from spt.reports.cost import COLUMNS, cost_markdown, cost_rows
from spt.training.engine import TrainConfig, read_cost_log, train
from spt.training.losses import dice_loss, hq_sam_loss
from tests.test_train import _empty_params, _train_args
from tests.toy_training import IDS, ToyModel, collate, make_sample_for


def test_in_fp32_gives_fp32_losses_under_autocast_and_leaves_fp32_alone():
    logits = torch.randn(2, 1, 16, 16)
    targets = (torch.rand(2, 1, 16, 16) > 0.5).float()
    reference = dice_loss(logits, targets)
    with autocast("cpu", "bf16"):
        low = logits.bfloat16()
        mixed = dice_loss(low, targets)
    assert mixed.dtype == torch.float32
    # the same loss as fp32 on the bf16-rounded logits: computed in fp32, not in bf16
    assert torch.equal(mixed, dice_loss(low.float(), targets))
    assert (mixed - reference).abs() < 1e-2

    calls = []

    @in_fp32
    def probe(x):
        calls.append(x)
        return x

    tensor = torch.ones(3)
    assert probe(tensor) is tensor  # no autocast: the very tensor, untouched


def test_hq_sam_loss_is_fp32_under_autocast():
    logits = torch.randn(1, 1, 32, 32, requires_grad=True)
    target = (torch.rand(1, 1, 32, 32) > 0.5).float()
    with autocast("cpu", "bf16"):
        bce, dice = hq_sam_loss(logits.bfloat16(), target, torch.Generator().manual_seed(3), 64)
    assert bce.dtype == dice.dtype == torch.float32
    (bce + dice).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_unknown_precision_is_one_line():
    with pytest.raises(SuiteError, match="use one of fp32, bf16, fp16"):
        check_precision("fp8")
    with pytest.raises(SuiteError, match="train.precision"):
        TrainConfig(precision="half")


def test_peak_memory_of_this_process_is_positive():
    peak = peak_memory("cpu")
    assert peak["peak_memory_kind"] == "process peak RSS"
    assert peak["peak_memory_bytes"] > 50 * 2**20  # torch alone is bigger than 50 MiB


def test_a_child_reports_its_own_peak_not_its_parents(tmp_path):
    """ru_maxrss survives exec on Linux: a small child of a big parent would report the
    parent's peak. The child here allocates nothing big (about 0.7 GiB: the interpreter and
    torch's import); its peak must stay far below the parent's after the parent touched 2 GiB."""
    import subprocess
    import sys

    ballast = bytearray(2 << 30)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page
    code = "from spt.harness.compute import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout)  # fmt: skip
    del ballast
    assert child < 2**30, child  # ru_maxrss would give more than 2 GiB here


def _toy_train(tmp_path, precision, epochs=2, **kwargs):
    config = TrainConfig(epochs=epochs, batch_size=2, lr=0.05, seed=3, precision=precision)
    model = ToyModel()
    result = train(
        model, IDS, make_sample_for(config), collate, config, tmp_path, progress=False,
        cost_log=tmp_path / "cost.csv", **kwargs,
    )  # fmt: skip
    return model, result


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_learns_with_finite_fp32_losses(tmp_path, precision):
    model, result = _toy_train(tmp_path, precision, epochs=4)
    losses = [row["loss"] for row in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights fp32
    state = torch.load(tmp_path / "state" / "last.pt", weights_only=True)
    if precision == "fp16":  # the scaler ran and its state is saved for resume
        assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] >= 0
    else:
        assert state["scaler"] == {}


def test_fp16_scaler_skips_an_overflowing_step(tmp_path):
    """A loss scale so large that the scaled gradient overflows in fp16: the scaler must skip
    that step (weights unchanged) and halve the scale, not write inf into the weights."""
    config = TrainConfig(epochs=1, batch_size=12, lr=0.05, seed=3, precision="fp16")
    model = ToyModel()
    before = model.head.weight.detach().clone()
    scaler_scale = {}
    original = torch.amp.GradScaler.__init__

    def huge(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "init_scale": 2.0**126})
        scaler_scale["obj"] = self

    torch.amp.GradScaler.__init__ = huge
    try:
        train(model, IDS, make_sample_for(config), collate, config, tmp_path, progress=False)
    finally:
        torch.amp.GradScaler.__init__ = original
    assert torch.equal(model.head.weight, before)  # the one step was skipped
    assert scaler_scale["obj"].get_scale() < 2.0**126


def test_fp32_training_is_unchanged_by_the_precision_code(tmp_path):
    """fp32 (the default) goes through the disabled scaler: the same bits as a plain
    backward + Adam step (the engine tests' resume and torchrun checks rely on it too)."""
    model, _ = _toy_train(tmp_path / "a", "fp32")
    again, _ = _toy_train(tmp_path / "b", "fp32")
    assert torch.equal(model.head.weight, again.head.weight)


def test_cost_log_has_every_epoch_and_survives_resume(tmp_path):
    _toy_train(tmp_path, "fp32", epochs=2, stop_after_epochs=1)
    first = read_cost_log(tmp_path / "cost.csv")
    assert [row["epoch"] for row in first] == [1]
    _, result = _toy_train(tmp_path, "fp32", epochs=2, resume=True)
    rows = read_cost_log(tmp_path / "cost.csv")
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[0] == first[0]  # the first epoch's measurement is kept, not redone
    assert all(row["seconds"] > 0 and row["steps"] == 6 for row in rows)
    assert rows[1]["seconds_per_step"] == pytest.approx(rows[1]["seconds"] / 6)
    assert result.costs == rows


def test_cost_table_from_real_training_and_evaluation_logs(synthetic_prepared, tmp_path):
    train_root, eval_root = tmp_path / "train", tmp_path / "eval"
    assert main(_train_args(synthetic_prepared, train_root, "--epochs", "2")) == 0
    log = pd.read_csv(train_root / "spt" / "tiny.cost.csv")
    assert list(log["epoch"]) == [1, 2]
    for method, extra in (
        ("spt", ["--trained", str(train_root / "spt" / "tiny" / "trained.pt")]),
        ("zero_shot", []),
    ):
        argv = [
            "evaluate", "--params", _empty_params(tmp_path), "--method", method,
            "--datasets", "mtd_twin", "--prepared-root", str(synthetic_prepared),
            "--out", str(eval_root), "--prompt-modes", "box", "points-1", "--no-progress",
            *extra,
        ]  # fmt: skip
        assert main(argv) == 0
    cost = read_cost(eval_root / "spt" / "tiny" / "records.parquet")
    assert cost["precision"] == "fp32" and cost["device"] == "cpu" and cost["processes"] == 1
    assert cost["peak_memory_bytes"] > 0

    table = cost_rows(eval_root, train_root, "tiny", ["spt", "zero_shot"]).set_index("method")
    spt, zero = table.loc["spt"], table.loc["zero_shot"]
    assert spt["trainable"] == 16_000 and zero["trainable"] == 0
    assert spt["train_s_per_step"] > 0 and spt["train_s_per_epoch"] >= spt["train_s_per_step"]
    assert spt["train_s_per_epoch"] == pytest.approx(log["seconds"].mean())
    assert spt["train_peak_gib"] == pytest.approx(log["peak_memory_bytes"].max() / 2**30)
    records = pd.read_parquet(eval_root / "spt" / "tiny" / "records.parquet")
    per_image = records.drop_duplicates("image_id")["encode_seconds"].mean()
    assert spt["encode_s_per_image"] == pytest.approx(per_image)
    assert spt["decode_s_per_prompt"] > 0 and zero["decode_s_per_prompt"] > 0
    assert spt["train_compute"] == "cpu, fp32" and spt["eval_compute"] == "cpu, fp32"
    assert pd.isna(zero["train_s_per_step"])  # not trained: no training cost
    text = cost_markdown(table.reset_index(), "tiny")
    assert all(header in text for header in COLUMNS.values())
    assert "process peak RSS" in text


def test_bf16_evaluation_scores_fp32_logits_and_says_so(synthetic_prepared, tmp_path):
    outs = {}
    for precision in ("fp32", "bf16"):
        argv = [
            "evaluate", "--params", _empty_params(tmp_path), "--method", "zero_shot",
            "--datasets", "mtd_twin", "--prepared-root", str(synthetic_prepared),
            "--out", str(tmp_path / precision), "--prompt-modes", "box",
            "--precision", precision, "--no-progress",
        ]  # fmt: skip
        assert main(argv) == 0
        outs[precision] = tmp_path / precision / "zero_shot" / "tiny" / "records.parquet"
    assert read_cost(outs["bf16"])["precision"] == "bf16"
    fp32, bf16 = (pd.read_parquet(outs[p]).set_index("image_id") for p in ("fp32", "bf16"))
    assert fp32["iou"].notna().all() and bf16["iou"].notna().all()
    # bf16 keeps 8 bits of mantissa: masks move a little, not everywhere
    assert (fp32["iou"] - bf16["iou"]).abs().max() < 0.25


def test_the_gpu_memory_script_runs_at_tiny_on_cpu(tmp_path):
    """tools/measure_memory.py is meant for a lent GPU; this keeps it working in between."""
    import importlib.util

    from tests.test_train import ROOT

    spec = importlib.util.spec_from_file_location("measure", ROOT / "tools" / "measure_memory.py")
    measure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measure)
    argv = ["--device", "cpu", "--backbones", "tiny", "--methods", "spt", "lora",
            "--precisions", "fp32", "--batches", "1", "--rounds", "1", "--out", str(tmp_path)]  # fmt: skip
    assert measure.main(argv) == 0
    memory = pd.read_csv(tmp_path / "memory.csv")
    assert len(memory) == 4 and (memory["peak_gib"] > 0).all()
    # checkpointing is exact: the same loss with and without
    for _, pair in memory.groupby("method"):
        assert pair["loss"].nunique() == 1
    throughput = pd.read_csv(tmp_path / "throughput.csv")
    assert (throughput["gflop_per_image"] > 0).all() and (throughput["images_per_s"] > 0).all()
