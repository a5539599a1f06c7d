"""`spt report`: every file from a small fake evaluation, checked against independent numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spt.artifacts import TRAINED_FORMAT
from spt.cli import main
from spt.data.manifest import write_manifest
from spt.harness.records import records_table, write_records
from spt.reports.paired_stats import BETTER, NO_DIFFERENCE, WORSE

BACKBONE = "tiny"
DATASETS = ("dsa", "dsb")
MODES = ("box", "points-1")
STAGES = {"zero_shot": ("final",), "lora": ("final",), "spt": ("draft", "final")}
IMAGES_PER_DATASET = 12
BETTER_DATASET = "dsa"  # spt (final) is clearly better there
SHIFT = 0.45
EXAMPLE_IMAGES = (0, 1)  # kept by every method; lora also keeps image 2
SIDE = 8
LORA_PARAMETERS = 1234


def image_id(dataset: str, index: int) -> str:
    return f"{dataset}/img{index}"


def fake_records(seeds: tuple[int, ...]) -> list[dict]:
    rng = np.random.default_rng(7)
    records = []
    for method, stages in STAGES.items():
        for seed in seeds:
            for dataset in DATASETS:
                for index in range(IMAGES_PER_DATASET):
                    for mode in MODES:
                        for stage in stages:
                            no_prompt = mode == "points-1" and index == 0
                            iou = np.nan if no_prompt else float(rng.uniform(0.1, 0.5))
                            if (method, stage, dataset) == ("spt", "final", BETTER_DATASET):
                                iou += SHIFT  # above every other method on every image
                            records.append(
                                {
                                    "method": method,
                                    "backbone": BACKBONE,
                                    "seed": seed,
                                    "dataset": dataset,
                                    "category": "c",
                                    "defect_type": "d",
                                    "image_id": image_id(dataset, index),
                                    "prompt_mode": mode,
                                    "stage": stage,
                                    "iou": iou,
                                    "biou": iou / 2,
                                    "dice": iou,
                                    "seconds": 0.01,
                                    "encode_seconds": 0.1,
                                    "status": "no_prompt" if no_prompt else "ok",
                                    "reason": "no foreground" if no_prompt else "",
                                }
                            )
    return records


def write_examples(path: Path, method: str) -> None:
    indices = [*EXAMPLE_IMAGES, 2] if method == "lora" else list(EXAMPLE_IMAGES)
    arrays = {}
    for dataset in DATASETS:
        for index in indices:
            for stage in STAGES[method]:
                mask = np.zeros((SIDE, SIDE), bool)
                mask[index : index + 3, 2:6] = True
                key = f"{image_id(dataset, index)}|box|{stage}"
                arrays[f"{key}|bits"] = np.packbits(mask)
                arrays[f"{key}|shape"] = np.asarray(mask.shape)
    np.savez(path, **arrays)


def write_prepared(root: Path) -> None:
    for dataset in DATASETS:
        folder = root / dataset
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        rows = []
        for index in range(IMAGES_PER_DATASET):
            name = f"img{index}.png"
            pixels = np.full((SIDE, SIDE, 3), 40 * (index % 5), np.uint8)
            mask = np.zeros((SIDE, SIDE), np.uint8)
            mask[1:4, 1:5] = 255
            Image.fromarray(pixels).save(folder / "images" / name)
            Image.fromarray(mask).save(folder / "masks" / name)
            rows.append(
                {
                    "image_id": image_id(dataset, index),
                    "dataset": dataset,
                    "category": "c",
                    "defect_type": "d",
                    "label": "defect",
                    "split": "test",
                    "image_path": f"images/{name}",
                    "mask_path": f"masks/{name}",
                    "height": SIDE,
                    "width": SIDE,
                    "mask_pixels": int((mask > 0).sum()),
                    "image_sha256": "x",
                    "mask_sha256": "y",
                    "prepared_mask_sha256": "",
                }
            )
        write_manifest(pd.DataFrame(rows), folder / "manifest.csv")


def make_inputs(
    root: Path, seeds: tuple[int, ...], per_seed_folders: bool = False
) -> tuple[list[dict], list[str]]:
    """Records in <eval>/<method>/<backbone>/, or, as the pipeline writes several training
    seeds, in <eval>/seed<N>/<method>/<backbone>/."""
    records = fake_records(seeds)
    runs = [(f"seed{seed}", (seed,)) for seed in seeds] if per_seed_folders else [("", seeds)]
    for run, run_seeds in runs:
        for method in STAGES:
            folder = root / "eval" / run / method / BACKBONE
            mine = [r for r in records if r["method"] == method and r["seed"] in run_seeds]
            write_records(records_table(mine), folder / "records.parquet")
            write_examples(folder / "examples.npz", method)
    run = runs[0][0]
    trained = root / "train" / run / "lora" / BACKBONE / "trained.pt"
    trained.parent.mkdir(parents=True)
    torch.save({"format": TRAINED_FORMAT, "trainable_parameters": LORA_PARAMETERS}, trained)
    write_prepared(root / "prepared")
    argv = ["report", "--eval-root", str(root / "eval"), "--train-root", str(root / "train")]
    argv += ["--prepared-root", str(root / "missing"), str(root / "prepared")]
    (root / "params.yaml").touch()  # empty: the built-in defaults
    argv += ["--n-boot", "200", "--figure-n-boot", "50", "--params", str(root / "params.yaml")]
    return records, argv


def expected_means(records: list[dict]) -> pd.Series:
    """Mean IoU per (mode, label, dataset): over ok images per seed, then over seeds."""
    frame = pd.DataFrame(records)
    frame = frame[frame["status"] == "ok"]
    frame["label"] = [
        f"{m} ({s})" if len(STAGES[m]) > 1 else m
        for m, s in zip(frame["method"], frame["stage"], strict=True)
    ]
    per_seed = frame.groupby(["prompt_mode", "label", "dataset", "seed"])["iou"].mean()
    return per_seed.groupby(level=[0, 1, 2]).mean()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    records, argv = make_inputs(root, seeds=(0, 1))
    out = root / "reports"
    assert main([*argv, "--out", str(out)]) == 0
    return root, records, argv, out


def test_writes_every_file(report):
    _, _, _, out = report
    for mode in MODES:
        for suffix in (".md", ".tex", ".csv"):
            assert (out / "tables" / f"metrics_{BACKBONE}_{mode}{suffix}").is_file()
        assert (out / "figures" / f"bars_{BACKBONE}_{mode}.png").is_file()
    for dataset in DATASETS:
        assert (out / "figures" / f"overlay_{BACKBONE}_{dataset}.png").is_file()
    for name in ("significance.md", "significance.json", "seed_spread.csv", "README.md"):
        assert (out / name).is_file()


def test_table_cells_equal_independent_means(report):
    _, records, _, out = report
    expected = expected_means(records)
    for mode in MODES:
        table = pd.read_csv(
            out / "tables" / f"metrics_{BACKBONE}_{mode}.csv", header=[0, 1], index_col=0
        )
        labels = sorted(expected.loc[mode].index.get_level_values(0).unique())
        assert sorted(table.index) == labels
        for label in labels:
            for dataset in DATASETS:
                want = expected.loc[(mode, label, dataset)]
                assert table.loc[label, ("IoU", dataset)] == pytest.approx(want)
            dataset_means = [expected.loc[(mode, label, d)] for d in DATASETS]
            assert table.loc[label, ("IoU", "mean")] == pytest.approx(np.mean(dataset_means))
        params = table[("params", "trainable")]
        assert params["zero_shot"] == 0
        assert params["lora"] == LORA_PARAMETERS
        assert np.isnan(params["spt (final)"])


def test_significance_has_one_row_per_comparison(report):
    _, _, _, out = report
    document = json.loads((out / "significance.json").read_text())
    rows = document["comparisons"]
    keys = [(r["backbone"], r["prompt_mode"], r["dataset"], r["baseline"]) for r in rows]
    baselines = ("lora", "spt (draft)", "zero_shot")
    want = {(BACKBONE, m, d, b) for m in MODES for d in DATASETS for b in baselines}
    assert len(keys) == len(set(keys)) and set(keys) == want
    assert all(r["reference"] == "spt" for r in rows)
    for row in rows:
        if row["dataset"] == BETTER_DATASET:
            assert row["verdict"] == BETTER and row["mean_diff"] > 0
        else:
            assert row["verdict"] in {BETTER, NO_DIFFERENCE, WORSE}
    assert document["settings"]["n_boot"] == 200
    assert "spt (draft)" in (out / "significance.md").read_text()


def test_readme_indexes_every_file_and_the_headline(report):
    _, records, _, out = report
    text = (out / "README.md").read_text()
    written = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "README.md")
    # tables, significance, spread, bars, overlays, cost (md + csv)
    assert len(written) == 2 * 3 + 2 + 1 + 2 + 2 + 2
    for path in written:
        link = path.relative_to(out).as_posix()
        assert f"[{link}]({link})" in text
    headline = expected_means(records).loc["box"].groupby(level=0).mean()
    for label, value in headline.items():
        assert f"| {label} | {value:.3f} |" in text


def test_overlay_rows_are_the_examples_all_methods_kept(report):
    _, _, _, out = report
    with Image.open(out / "figures" / f"overlay_{BACKBONE}_dsa.png") as figure:
        width, height = figure.size
    panel = 220  # overlay_grid's default 2.2 inches at 100 dpi
    columns = 2 + 4  # image, ground truth, zero_shot, lora, spt (draft), spt (final)
    assert (width, height) == (columns * panel, len(EXAMPLE_IMAGES) * panel)


def test_rerun_gives_identical_text(report):
    root, _, argv, out = report
    again = root / "again"
    assert main([*argv, "--out", str(again)]) == 0
    for path in out.rglob("*"):
        if path.suffix in {".md", ".json", ".csv", ".tex"}:
            assert (again / path.relative_to(out)).read_bytes() == path.read_bytes(), path


def test_single_seed_writes_no_seed_spread(tmp_path):
    _, argv = make_inputs(tmp_path, seeds=(0,))
    out = tmp_path / "reports"
    assert main([*argv, "--out", str(out), "--examples", "1"]) == 0
    assert not (out / "seed_spread.csv").exists()
    assert "seed_spread" not in (out / "README.md").read_text()
    with Image.open(out / "figures" / f"overlay_{BACKBONE}_dsb.png") as figure:
        assert figure.size[1] == 220


def test_per_seed_run_folders_give_the_same_report(report, tmp_path):
    _, _, _, flat_out = report
    _, argv = make_inputs(tmp_path, seeds=(0, 1), per_seed_folders=True)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 0
    for name in ("seed_spread.csv", "significance.json", "tables/metrics_tiny_box.csv"):
        assert (out / name).read_text() == (flat_out / name).read_text(), name


def test_duplicate_records_are_refused_as_regress_refuses_them(tmp_path, capsys):
    """A hand run's <method>/<backbone>/ beside the pipeline's seed0/ (issue #14 measured SPT's
    mvtec IoU moving from 0.362 to 0.349 when both were averaged) is one line naming both."""
    _, argv = make_inputs(tmp_path, seeds=(0,), per_seed_folders=True)
    extra = tmp_path / "eval" / "lora" / BACKBONE
    extra.mkdir(parents=True)
    shutil.copy(tmp_path / "eval" / "seed0" / "lora" / BACKBONE / "records.parquet", extra)
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "duplicate evaluation record" in lines[0], lines
    assert str(extra / "records.parquet") in lines[0] and "seed0" in lines[0]
    assert not (tmp_path / "out").exists()


def test_record_names_that_climb_out_of_the_report_are_refused(tmp_path, capsys):
    """Issue #14: a records file whose dataset was `<ds>/./../../<folder>/victim` made the report
    unlink <folder>/victim.png. Names that become file names must be plain names."""
    _, argv = make_inputs(tmp_path, seeds=(0,))
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep")
    path = tmp_path / "eval" / "lora" / BACKBONE / "records.parquet"
    frame = pd.read_parquet(path)
    frame["dataset"] = f"dsa/./../../../../{tmp_path.name}/victim"
    frame.to_parquet(path)
    assert main([*argv, "--out", str(tmp_path / "out" / "deep")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "dataset" in lines[0] and "is not a plain name" in lines[0], lines
    assert victim.read_bytes() == b"keep"


def test_a_report_folder_another_run_is_writing_is_refused(tmp_path, capsys):
    from spt.artifacts import folder_lock

    _, argv = make_inputs(tmp_path, seeds=(0,))
    out = tmp_path / "out"
    with folder_lock(out, "report"):
        assert main([*argv, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "`spt report (pid" in lines[0] and "is writing here" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written, the lock file gone
    assert main([*argv, "--out", str(out)]) == 0  # free again


def test_empty_eval_root_is_one_line_error(tmp_path, capsys):
    (tmp_path / "eval").mkdir()
    argv = ["report", "--eval-root", str(tmp_path / "eval"), "--out", str(tmp_path / "out")]
    (tmp_path / "params.yaml").touch()
    assert main([*argv, "--params", str(tmp_path / "params.yaml")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "spt evaluate" in lines[0] and str(tmp_path / "eval") in lines[0]
    assert not (tmp_path / "out").exists()


def test_unknown_reference_method_is_one_line_error(report, capsys, tmp_path):
    _, _, argv, _ = report
    assert main([*argv, "--out", str(tmp_path / "out"), "--reference-method", "nope"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--reference-method" in lines[0]


def test_label_order_lists_each_label_once_whatever_the_reference():
    from spt.reports.pipeline_report import label_order

    frame = pd.DataFrame(fake_records((0,)))
    assert label_order(frame, "spt") == ["zero_shot", "lora", "spt (draft)", "spt (final)"]
    assert label_order(frame, "zero_shot") == ["lora", "spt (draft)", "spt (final)", "zero_shot"]


def test_zero_shot_as_reference_method_writes_the_report(report, tmp_path):
    _, _, argv, _ = report
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "--reference-method", "zero_shot"]) == 0
    table = pd.read_csv(out / "tables" / f"metrics_{BACKBONE}_box.csv", header=[0, 1], index_col=0)
    assert list(table.index) == ["lora", "spt (draft)", "spt (final)", "zero_shot"]
    assert (out / "figures" / f"bars_{BACKBONE}_box.png").is_file()


def test_cost_table_rows_follow_the_metric_tables(report):
    """Zero-shot first, the baselines, the reference last: the metric tables' order (not the
    alphabet, which would put zero-shot last)."""
    _, _, _, out = report
    cost = pd.read_csv(out / "tables" / f"cost_{BACKBONE}.csv")
    assert list(cost["method"]) == ["zero_shot", "lora", "spt"]
    table = (out / "tables" / f"metrics_{BACKBONE}_box.md").read_text()
    assert table.index("zero_shot") < table.index("lora") < table.index("spt (draft)")
