"""`spt metrics`: the DVC metrics and plots files, checked against independent means, and
`dvc metrics diff` between two commits showing a change planted in the records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spt.cli import main
from spt.harness.records import records_table, write_records
from tests.external_tools import run_tool, tool
from tests.test_report import BACKBONE, DATASETS, STAGES, expected_means, fake_records

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1)
EPOCHS = 3


def write_inputs(root: Path, records: list[dict]) -> None:
    """Records as the pipeline lays them out (eval/seed<N>/<method>/<backbone>/) and a
    train_log.csv per trained method and seed."""
    for seed in sorted({r["seed"] for r in records}):
        for method in STAGES:
            mine = [r for r in records if r["method"] == method and r["seed"] == seed]
            folder = root / "eval" / f"seed{seed}" / method / BACKBONE
            write_records(records_table(mine), folder / "records.parquet")
            if method != "zero_shot":
                log = root / "train" / f"seed{seed}" / method / BACKBONE / "train_log.csv"
                log.parent.mkdir(parents=True, exist_ok=True)
                losses = [1.0 / (epoch + seed + 1) for epoch in range(EPOCHS)]
                lines = ["epoch,lr,loss", *(f"{e + 1},0.001,{x!r}" for e, x in enumerate(losses))]
                log.write_text("\n".join(lines) + "\n")


def run_metrics(root: Path, out: Path, *extra: str) -> int:
    (root / "params.yaml").touch()  # empty: the built-in defaults (reference method spt)
    argv = ["metrics", "--eval-root", str(root / "eval"), "--train-root", str(root / "train")]
    return main([*argv, "--out", str(out), "--params", str(root / "params.yaml"), *extra])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    records = fake_records(SEEDS)
    write_inputs(root, records)
    assert run_metrics(root, root / "metrics") == 0
    return root, records


def _load(root: Path, name: str) -> dict:
    return json.loads((root / "metrics" / name).read_text())


def _key_parts(label: str) -> tuple[str, str]:
    method, _, stage = label.partition(" (")
    return method, stage.rstrip(")") or "final"


def test_headline_and_dataset_means_equal_independent_means(written):
    root, records = written
    expected = expected_means(records)  # (mode, label, dataset), mean over seeds of seed means
    headline, per_dataset = _load(root, "headline.json"), _load(root, "datasets.json")
    for (mode, label), by_dataset in expected.groupby(level=[0, 1]):
        method, stage = _key_parts(label)
        for metric, scale in (("iou", 1.0), ("biou", 0.5)):
            mean = float(by_dataset.mean()) * scale
            assert headline[f"{mode}.{method}.{stage}.{metric}"] == pytest.approx(mean, abs=1e-6)
            for (_, _, dataset), value in by_dataset.items():
                key = f"{mode}.{dataset}.{method}.{stage}.{metric}"
                assert per_dataset[key] == pytest.approx(value * scale, abs=1e-6)
    labels = expected.index.get_level_values(1).unique()
    assert len(headline) == 2 * len(labels) * 2 + 2  # 2 modes x labels x 2 metrics + counts
    assert headline["n_seeds"] == len(SEEDS) and headline["n_datasets"] == len(DATASETS)
    assert len(per_dataset) == 2 * len(labels) * 2 * len(DATASETS)


def test_files_are_flat_sorted_and_identical_on_a_rerun(written, tmp_path):
    root, _ = written
    for name in ("headline.json", "datasets.json"):
        text = (root / "metrics" / name).read_text()
        data = json.loads(text)
        assert all(isinstance(v, (int, float)) for v in data.values())  # flat: no nesting
        assert list(data) == sorted(data)
        assert len(text.splitlines()) == len(data) + 2  # one key per line
    assert run_metrics(root, tmp_path / "again") == 0
    for path in (root / "metrics").rglob("*.*"):
        again = tmp_path / "again" / path.relative_to(root / "metrics")
        assert again.read_bytes() == path.read_bytes(), path.name


def test_plot_files_hold_losses_bars_and_seed_points(written):
    root, records = written
    plots = root / "metrics" / "plots"
    loss = pd.read_csv(plots / "train_loss.csv")
    assert sorted(loss["run"].unique()) == [f"{m} seed{s}" for m in ("lora", "spt") for s in SEEDS]
    spt1 = loss[loss["run"] == "spt seed1"]
    assert spt1["epoch"].tolist() == [1, 2, 3]
    assert spt1["loss"].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 4], abs=1e-6)

    bars = pd.read_csv(plots / "datasets_box.csv")
    expected = expected_means(records).xs("box", level=0)
    assert bars["dataset"].tolist()[-1] == "mean"  # the mean after the datasets
    order = ["zero_shot", "lora", "spt (draft)", "spt (final)"]  # the report's row order
    assert bars[bars["dataset"] == DATASETS[0]]["method"].tolist() == order
    for row in bars.itertuples():
        want = expected.xs(row.method, level=0)
        value = want.mean() if row.dataset == "mean" else want[row.dataset]
        assert row.iou == pytest.approx(value, abs=1e-6)

    seeds = pd.read_csv(plots / "seed_spread.csv")
    frame = pd.DataFrame(records)
    box = frame[(frame["prompt_mode"] == "box") & (frame["status"] == "ok")]
    for row in seeds.itertuples():
        method, stage = _key_parts(row.method)
        mine = box[(box["method"] == method) & (box["stage"] == stage) & (box["seed"] == row.seed)]
        assert row.iou == pytest.approx(mine.groupby("dataset")["iou"].mean().mean(), abs=1e-6)
    assert len(seeds) == len(order) * len(SEEDS)


def test_a_method_missing_a_dataset_gets_no_headline_key(tmp_path):
    records = [
        r for r in fake_records((0,)) if not (r["method"] == "lora" and r["dataset"] == "dsb")
    ]
    write_inputs(tmp_path, records)
    assert run_metrics(tmp_path, tmp_path / "metrics") == 0
    headline = _load(tmp_path, "headline.json")
    assert "box.lora.final.iou" not in headline and "box.spt.final.iou" in headline
    assert "box.dsa.lora.final.iou" in _load(tmp_path, "datasets.json")


def test_a_broken_training_log_is_one_line_naming_it(tmp_path, capsys):
    write_inputs(tmp_path, fake_records((0,)))
    log = tmp_path / "train" / "seed0" / "lora" / BACKBONE / "train_log.csv"
    log.write_text("epoch,loss\n1,abc\n")
    assert run_metrics(tmp_path, tmp_path / "metrics") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(log) in err[0] and "spt train" in err[0], err


def test_another_backbone_is_one_line(written, capsys):
    root, _ = written
    assert run_metrics(root, root / "other", "--backbone", "vit_b") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vit_b" in err[0] and "found tiny" in err[0], err


# --- dvc metrics diff -------------------------------------------------------------------------


def test_dvc_metrics_diff_shows_a_planted_change(tmp_path):
    """The project's own dvc.yaml declares the metrics; two commits of `spt metrics` output,
    the second from records where lora's box IoU on one dataset rose by 0.3."""
    git, dvc = tool("git"), tool("dvc")
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    run_tool(git, "init", "-q", cwd=repo)
    run_tool(dvc, "init", "-q", "--force", cwd=repo)
    records = fake_records((0,))
    inputs = tmp_path / "inputs"
    write_inputs(inputs, records)
    assert run_metrics(inputs, repo / "metrics") == 0
    run_tool(git, "add", "-A", cwd=repo)
    run_tool(git, "commit", "-qm", "before", cwd=repo)

    planted = 0.3
    for r in records:
        if (r["method"], r["prompt_mode"], r["dataset"]) == ("lora", "box", "dsa"):
            if r["status"] == "ok":
                r["iou"] += planted
                r["biou"] = r["iou"] / 2
    write_inputs(inputs, records)
    assert run_metrics(inputs, repo / "metrics") == 0
    run_tool(git, "commit", "-qam", "after", cwd=repo)

    diff = json.loads(run_tool(dvc, "metrics", "diff", "HEAD~1", "HEAD", "--json", cwd=repo))
    changed = {key: values for per_file in diff.values() for key, values in per_file.items()}
    # the unweighted mean over the two datasets moves by planted / 2, the dataset by planted
    assert changed["box.lora.final.iou"]["diff"] == pytest.approx(planted / 2, abs=2e-6)
    assert changed["box.dsa.lora.final.iou"]["diff"] == pytest.approx(planted, abs=2e-6)
    assert changed["box.lora.final.biou"]["diff"] == pytest.approx(planted / 4, abs=2e-6)
    assert not any(key.startswith("box.spt") for key in changed)
    assert not any(".points-1." in key or key.startswith("points-1.lora") for key in changed)
    table = run_tool(dvc, "metrics", "diff", "HEAD~1", "--md", cwd=repo)
    assert "box.lora.final.iou" in table and "metrics/headline.json" in table
    assert np.isfinite(changed["box.lora.final.iou"]["new"])
