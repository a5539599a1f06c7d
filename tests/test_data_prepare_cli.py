"""`spt prepare` and `spt synth` end to end: missing data, failures, reports, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from spt.cli import main
from spt.config import load_config
from spt.data.config import parse_data_config
from spt.data.manifest import MANIFEST_COLUMNS, read_manifest
from spt.data.synthetic import TWIN_LAYOUTS, TwinSize, twin_name, write_twin

REPO_ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path, datasets: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump({"data": {"seed": 0, "train_fraction": 0.5, "datasets": datasets}})
    )
    return path


def test_repo_params_configure_every_publisher_dataset():
    config = parse_data_config(load_config(REPO_ROOT / "params.yaml", required=True).data)
    assert {"mvtec", "visa", "mpdd", "btad", "ksdd2", "mtd"} <= set(config.datasets)
    for name, dataset in config.datasets.items():
        assert dataset.layout == name and dataset.root == Path("data") / name
    assert config.datasets["visa"].mask_convention == "nonzero"
    assert config.datasets["mtd"].mask_convention == "threshold"


def test_clone_without_raw_data_names_what_is_missing(tmp_path, capsys):
    params = _params(
        tmp_path,
        {
            "mvtec": {"layout": "mvtec", "root": str(tmp_path / "data/mvtec")},
            "mtd": {"layout": "mtd", "root": str(tmp_path / "data/mtd")},
        },
    )
    out = tmp_path / "prepared"
    assert main(["prepare", "--params", str(params), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "missing (not prepared): mtd, mvtec" in printed
    assert "put MVTec AD there or set data.datasets.mvtec.root" in printed
    summary = json.loads((out / "prepare_report.json").read_text())
    assert [d["status"] for d in summary["datasets"]] == ["missing", "missing"]
    assert "| mvtec | missing |" in (out / "prepare_report.md").read_text()


def test_one_failed_dataset_does_not_stop_the_others(tmp_path, capsys):
    size = TwinSize(normal_train=1, normal_test=1, defects_per_type=2)
    write_twin("btad", tmp_path / "raw/btad", seed=1, size=size)
    write_twin("ksdd2", tmp_path / "raw/ksdd2", seed=1, size=size)
    params = _params(
        tmp_path,
        {
            "btad": {"layout": "btad", "root": str(tmp_path / "raw/btad")},
            "mvtec": {"layout": "mvtec", "root": str(tmp_path / "raw/ksdd2")},  # wrong dataset
            "visa": {"layout": "visa", "root": str(tmp_path / "raw/visa")},  # absent
        },
    )
    out = tmp_path / "prepared"
    assert main(["prepare", "--params", str(params), "--out", str(out), "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "mvtec: FAILED" in captured.err and "KSDD2" in captured.err
    assert "missing (not prepared): visa" in captured.out
    manifest = read_manifest(out / "btad" / "manifest.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS and len(manifest) > 0
    statuses = {
        d["dataset"]: d["status"]
        for d in json.loads((out / "prepare_report.json").read_text())["datasets"]
    }
    assert statuses == {"btad": "prepared", "mvtec": "failed", "visa": "missing"}


def test_subset_and_unknown_names(tmp_path, capsys):
    write_twin("mtd", tmp_path / "raw/mtd", seed=1, size=TwinSize(1, 1, 2))
    params = _params(
        tmp_path,
        {"mtd": {"layout": "mtd", "root": str(tmp_path / "raw/mtd")}, "mvtec": {"layout": "mvtec"}},
    )
    out = tmp_path / "prepared"
    assert main(["prepare", "--params", str(params), "--out", str(out), "--datasets", "mtd"]) == 0
    assert (out / "mtd" / "manifest.csv").is_file() and not (out / "mvtec").exists()
    report = json.loads((out / "mtd" / "report.json").read_text())["datasets"][0]
    assert report["totals"]["excluded"] == 1  # the all-zero MT_Uneven mask
    combined = json.loads((out / "prepare_report.json").read_text())["datasets"]
    assert [d["dataset"] for d in combined] == ["mtd"]  # mvtec was never prepared here
    capsys.readouterr()
    assert main(["prepare", "--params", str(params), "--datasets", "mvtecad"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset(s) mvtecad") and err.count("\n") == 1


def test_subset_rerun_merges_the_earlier_results(tmp_path):
    """A full run in which mtd failed, then `--datasets mtd` once it is fixed: the combined
    report says mtd is prepared and keeps the other dataset's earlier result."""
    write_twin("btad", tmp_path / "raw/btad", seed=1, size=TwinSize(1, 1, 2))
    (tmp_path / "raw/mtd").mkdir(parents=True)  # present but empty: fails
    datasets = {
        "btad": {"layout": "btad", "root": str(tmp_path / "raw/btad")},
        "mtd": {"layout": "mtd", "root": str(tmp_path / "raw/mtd")},
    }
    params = _params(tmp_path, datasets)
    out = tmp_path / "prepared"
    assert main(["prepare", "--params", str(params), "--out", str(out)]) == 1
    before = json.loads((out / "prepare_report.json").read_text())["datasets"]
    assert {d["dataset"]: d["status"] for d in before} == {"btad": "prepared", "mtd": "failed"}
    (tmp_path / "raw/mtd").rmdir()
    write_twin("mtd", tmp_path / "raw/mtd", seed=1, size=TwinSize(1, 1, 2))
    assert main(["prepare", "--params", str(params), "--out", str(out), "--datasets", "mtd"]) == 0
    after = json.loads((out / "prepare_report.json").read_text())["datasets"]
    assert {d["dataset"]: d["status"] for d in after} == {"btad": "prepared", "mtd": "prepared"}
    assert [d for d in after if d["dataset"] == "btad"] == [
        d for d in before if d["dataset"] == "btad"
    ]
    markdown = (out / "prepare_report.md").read_text()
    assert "| mtd | prepared |" in markdown and "| btad | prepared |" in markdown
    assert "FAILED" not in markdown and "failed" not in markdown


def test_bad_params_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  train_fraction: 2\n")
    assert main(["prepare", "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train_fraction" in err and err.count("\n") == 1


def test_synthetic_pipeline_runs_anywhere(tmp_path, capsys):
    params = _params(tmp_path, {})
    out = tmp_path / "prepared"
    synthetic = tmp_path / "synthetic"
    argv = ["prepare", "--params", str(params), "--synthetic", str(synthetic), "--out", str(out)]
    assert main(argv) == 0
    for layout in TWIN_LAYOUTS:
        manifest = read_manifest(out / twin_name(layout) / "manifest.csv")
        assert manifest.image_id.str.startswith(f"{layout}_twin/").all(), layout
        assert {"train", "test"} <= set(manifest.split), layout
        assert (manifest.label == "defect").any(), layout
    assert f"prepared {len(TWIN_LAYOUTS)} dataset(s)" in capsys.readouterr().out


def test_synth_command_writes_every_layout(tmp_path, capsys):
    out = tmp_path / "twins"
    empty = tmp_path / "params.yaml"
    empty.touch()  # the built-in defaults (a named --params file must exist)
    argv = ["synth", "--out", str(out), "--seed", "4", "--params", str(empty)]
    assert main(argv + ["--defects-per-type", "2"]) == 0
    printed = capsys.readouterr().out
    for layout in TWIN_LAYOUTS:
        assert f"{layout}: " in printed and (out / layout).is_dir()
    assert main(argv + ["--layouts", "nope"]) == 2


def test_output_inside_raw_data_is_refused(tmp_path, capsys):
    write_twin("mtd", tmp_path / "raw/mtd", seed=1, size=TwinSize(1, 1, 2))
    params = _params(tmp_path, {"mtd": {"layout": "mtd", "root": str(tmp_path / "raw/mtd")}})
    argv = ["prepare", "--params", str(params), "--out", str(tmp_path / "raw/mtd/prepared")]
    assert main(argv) == 2
    assert "overlaps the raw-data root of dataset mtd" in capsys.readouterr().err
    assert not (tmp_path / "raw/mtd/prepared").exists()
