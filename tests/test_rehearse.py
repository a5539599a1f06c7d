"""`spt rehearse`: the timed end-to-end run and the arithmetic of its extrapolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from spt.commands.rehearse import PAPER_DEFECTS, extrapolate, measured_rates, protocol_images

ROOT = Path(__file__).resolve().parents[1]


def test_extrapolation_is_steps_times_rates():
    rates = {
        "spt": {"encode_s_per_image": 2.0, "decode_s_per_prompt": 0.5, "train_s_per_step": 10.0},
        "zero_shot": {"encode_s_per_image": 1.0, "decode_s_per_prompt": 0.25},
    }
    images = {"a": (100, 50, "x"), "b": (20, 10, "y")}
    cost = extrapolate(rates, images, epochs=16, modes=7)
    assert cost["train_images"] == 120 and cost["test_images"] == 60
    assert cost["methods"]["spt"]["train_h"] == pytest.approx(120 * 16 * 10 / 3600)
    assert cost["methods"]["spt"]["eval_h"] == pytest.approx(60 * (2 + 7 * 0.5) / 3600)
    assert cost["methods"]["zero_shot"]["train_h"] == 0
    assert cost["total_h"] == pytest.approx((120 * 16 * 10 + 60 * 5.5 + 60 * (1 + 7 * 0.25)) / 3600)


def test_prepared_counts_replace_the_assumed_ones():
    images = protocol_images({"mvtec": (600, 658)}, train_fraction=0.5)
    assert images["mvtec"] == (600, 658, "prepared here")
    assert images["visa"][:2] == (600, 600)  # 1,200 under the 0.5 split
    assert images["ksdd2"][:2] == (246, 110)  # the publisher's split
    assert set(images) == set(PAPER_DEFECTS)


def test_rates_count_each_image_and_prompt_once():
    rows = []
    for image, encode in (("i0", 1.0), ("i1", 3.0)):
        for mode, decode in (("box", 0.1), ("points-1", 0.3)):
            for stage in ("draft", "final"):  # one decode makes both stages' rows
                rows.append(
                    {"method": "spt", "image_id": image, "prompt_mode": mode, "stage": stage,
                     "encode_seconds": encode, "seconds": decode, "status": "ok"}
                )  # fmt: skip
    timings = [{"step": "train spt", "seconds": 50.0, "work_seconds": 40.0, "peak_rss_gb": 2.0}]
    rates = measured_rates(pd.DataFrame(rows), timings, train_steps=4)["spt"]
    assert rates["encode_s_per_image"] == pytest.approx(2.0)
    assert rates["decode_s_per_prompt"] == pytest.approx(0.2)
    assert rates["train_s_per_step"] == pytest.approx(10.0)  # after start-up, per step
    assert rates["train_peak_rss_gb"] == 2.0


@pytest.mark.slow
def test_a_tiny_rehearsal_runs_end_to_end(tmp_path):
    (tmp_path / "params.yaml").touch()  # built-in defaults; no data/mtd here: the twin
    argv = [
        sys.executable, "-m", "spt.cli", "rehearse", "--backbone", "tiny", "--methods", "lora",
        "--train-images", "2", "--eval-images", "1", "--prompt-modes", "box",
        "--params", "params.yaml", "--out", "out",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPT_NUMERICS": "portable"}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "rehearsal.json").read_text())
    assert [s["step"] for s in summary["steps"]] == [
        "synth mtd twin", "prepare mtd twin", "train lora", "evaluate zero_shot",
        "evaluate lora", "report",
    ]  # fmt: skip
    assert set(summary["rates"]) == {"lora", "zero_shot"}
    lora = summary["rates"]["lora"]
    train = summary["steps"][2]
    assert 0 < train["work_seconds"] < train["seconds"]  # start-up left out
    assert lora["train_s_per_step"] == pytest.approx(train["work_seconds"] / 2)
    assert lora["encode_s_per_image"] > 0 and lora["decode_s_per_prompt"] > 0
    assert summary["protocol"]["prompt_modes"] == 7  # the paper protocol scores every mode
    assert "random initialisation" in summary["weights"]
    assert "Extrapolated paper protocol" in done.stdout
    assert (tmp_path / "out" / "report" / "README.md").is_file()
    assert len(list((tmp_path / "out" / "logs").glob("*.log"))) == 6


def test_too_few_images_is_one_line(tmp_path, capsys):
    from spt.cli import main

    (tmp_path / "params.yaml").touch()
    argv = ["rehearse", "--params", str(tmp_path / "params.yaml"), "--train-images", "0"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--train-images" in err[0], err
