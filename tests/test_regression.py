"""The metric regression check: reference summaries, tolerance, planted regressions, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spt.cli import main
from spt.errors import SuiteError
from spt.harness.records import RECORD_COLUMNS as HARNESS_COLUMNS
from spt.harness.records import read_records
from spt.reports.regression import (
    DEFAULT_TOLERANCE,
    check_regression,
    kept_tolerance,
    load_reference,
    summarise_for_reference,
    write_reference,
)

# (method, stage, dataset) -> per-image (iou, biou), seed 0, backbone tiny, box prompts
HAND_VALUES = {
    ("spt", "draft", "mvtec"): [(0.5, 0.2), (0.7, 0.4)],
    ("spt", "final", "mvtec"): [(0.6, 0.3), (0.8, 0.5)],
    ("spt", "final", "visa"): [(0.2, 0.1), (0.4, 0.3), (0.9, 0.8)],
    ("zero_shot", "final", "mvtec"): [(0.1, 0.05), (0.3, 0.15)],
    ("zero_shot", "final", "visa"): [(0.5, 0.4), (0.6, 0.5), (0.7, 0.6)],
}


def record(method, stage, dataset, index, iou, biou, *, seed=0, status="ok") -> dict:
    return {
        "method": method,
        "backbone": "tiny",
        "seed": seed,
        "dataset": dataset,
        "category": "cat",
        "defect_type": "crack",
        "image_id": f"{dataset}/{index}",
        "prompt_mode": "box",
        "stage": stage,
        "iou": iou,
        "biou": biou,
        "dice": iou,
        "seconds": 0.01,
        "encode_seconds": 0.1,
        "status": status,
        "reason": "",
    }


def hand_records() -> pd.DataFrame:
    rows = [
        record(method, stage, dataset, index, iou, biou)
        for (method, stage, dataset), values in HAND_VALUES.items()
        for index, (iou, biou) in enumerate(values)
    ]
    rows.append(record("zero_shot", "final", "visa", 9, np.nan, np.nan, status="no_prompt"))
    rows.append(record("spt", "draft", "mvtec", 8, 0.9, np.nan))  # ok but BIoU NaN: left out
    return pd.DataFrame(rows, columns=HARNESS_COLUMNS)


def rows_by_key(summary: dict) -> dict:
    return {(r["method"], r["stage"], r["dataset"]): r for r in summary["metrics"]}


def test_summary_means_counts_and_unweighted_mean_by_hand():
    rows = rows_by_key(summarise_for_reference(hand_records()))
    assert rows[("zero_shot", "final", "visa")] == {
        "method": "zero_shot",
        "backbone": "tiny",
        "prompt_mode": "box",
        "stage": "final",
        "dataset": "visa",
        "iou": 0.6,
        "biou": 0.5,
        "n": 3,
    }
    assert rows[("spt", "draft", "mvtec")]["iou"] == pytest.approx(0.6)  # the NaN-BIoU image out
    assert rows[("spt", "draft", "mvtec")]["n"] == 2
    mean = rows[("spt", "final", "mean")]
    assert mean["iou"] == pytest.approx(round((0.7 + 0.5) / 2, 6))
    assert mean["biou"] == pytest.approx(round((0.4 + 0.4) / 2, 6))
    assert mean["n"] == 5
    assert len(rows) == 5 + 3  # five dataset rows plus a mean per method and stage
    assert [r["dataset"] for r in summarise_for_reference(hand_records())["metrics"]][:2] == [
        "mvtec",
        "mean",
    ]


def test_summary_averages_per_seed_means_and_rejects_duplicates():
    records = hand_records()
    extra = record("zero_shot", "final", "visa", 0, 0.9, 0.9, seed=1)  # seed 1 scores one image
    with_seed = pd.concat([records, pd.DataFrame([extra])], ignore_index=True)
    row = rows_by_key(summarise_for_reference(with_seed))[("zero_shot", "final", "visa")]
    assert row["iou"] == pytest.approx((0.6 + 0.9) / 2)
    assert row["n"] == 4
    duplicated = pd.concat([records, records.iloc[[0]]], ignore_index=True)
    with pytest.raises(SuiteError, match="1 duplicate evaluation record"):
        summarise_for_reference(duplicated)


def reference_of(records, tmp_path, tolerance=DEFAULT_TOLERANCE) -> dict:
    path = write_reference(tmp_path / "ref.json", summarise_for_reference(records), tolerance)
    return load_reference(path)


def test_identical_metrics_pass(tmp_path):
    reference = reference_of(hand_records(), tmp_path)
    result = check_regression(summarise_for_reference(hand_records()), reference)
    assert result.passed
    assert result.diff_table() == ""
    assert result.n_compared == len(reference["metrics"])
    assert "metrics match the reference" in result.report()


def test_a_planted_regression_beyond_tolerance_fails_and_names_row_and_values(tmp_path):
    reference = reference_of(hand_records(), tmp_path)
    records = hand_records()
    planted = (records["method"] == "zero_shot") & (records["image_id"] == "visa/0")
    records.loc[planted, "iou"] = 0.44  # visa mean 0.6 -> 0.58: beyond the 0.005 tolerance
    result = check_regression(summarise_for_reference(records), reference)
    assert not result.passed
    moved = {(d.key, d.field) for d in result.differences}
    visa = ("zero_shot", "tiny", "box", "final", "visa")
    mean = ("zero_shot", "tiny", "box", "final", "mean")
    assert moved == {(visa, "iou"), (mean, "iou")}
    line = next(x for x in result.diff_table().splitlines() if " visa " in x)
    assert line.split() == [
        "moved",
        *visa,
        "iou",
        "0.600000",
        "0.580000",
        "-0.020000",
        "0.005000",
    ]


def test_moves_within_tolerance_pass_and_the_limit_is_inclusive(tmp_path):
    reference = reference_of(hand_records(), tmp_path, {"iou": 0.02, "biou": 0.01})
    records = hand_records()
    planted = (records["method"] == "zero_shot") & (records["image_id"] == "visa/0")
    records.loc[planted, "iou"] = 0.44  # mean moves by exactly 0.02
    records.loc[planted, "biou"] = 0.41  # mean moves by 0.003
    assert check_regression(summarise_for_reference(records), reference).passed
    records.loc[planted, "iou"] = 0.43  # 0.0233 > 0.02
    assert not check_regression(summarise_for_reference(records), reference).passed


def test_improvements_beyond_tolerance_also_fail(tmp_path):
    reference = reference_of(hand_records(), tmp_path)
    records = hand_records()
    records.loc[records["method"] == "spt", "biou"] += 0.05
    result = check_regression(summarise_for_reference(records), reference)
    assert {d.field for d in result.differences} == {"biou"}
    assert all(d.current > d.reference for d in result.differences)


def test_missing_new_rows_and_n_changes_fail(tmp_path):
    reference = reference_of(hand_records(), tmp_path)
    records = hand_records()
    without_draft = records[records["stage"] != "draft"]
    result = check_regression(summarise_for_reference(without_draft), reference)
    assert {d.change for d in result.differences} == {"missing"}
    assert {d.key[3] for d in result.differences} == {"draft"}
    assert "missing" in result.diff_table()

    extra = pd.DataFrame([record("zero_shot", "final", "btad", 0, 0.5, 0.5)])
    result = check_regression(summarise_for_reference(pd.concat([records, extra])), reference)
    assert ("new", "btad") in {(d.change, d.key[4]) for d in result.differences}

    one_more = pd.DataFrame([record("spt", "final", "visa", 7, 0.5, 0.3)])  # same mean, n + 1
    result = check_regression(summarise_for_reference(pd.concat([records, one_more])), reference)
    changes = {(d.change, d.key[4], d.reference, d.current) for d in result.differences}
    assert ("n changed", "visa", 3, 4) in changes


def test_reference_file_is_one_row_per_line_with_its_tolerance(tmp_path):
    path = write_reference(
        tmp_path / "sub" / "ref.json",
        summarise_for_reference(hand_records()),
        {"iou": 0.1, "biou": 0.2},
    )
    text = path.read_text()
    document = json.loads(text)
    assert document["tolerance"] == {"iou": 0.1, "biou": 0.2}
    assert "spt regress --update" in document["description"]
    assert sum('"method"' in line for line in text.splitlines()) == len(document["metrics"])
    with pytest.raises(SuiteError, match='tolerance for "biou" must be a non-negative number'):
        write_reference(tmp_path / "x.json", {"metrics": []}, {"iou": 0.1, "biou": -1})


def test_malformed_references_are_one_line_errors_naming_the_file(tmp_path):
    path = tmp_path / "ref.json"
    with pytest.raises(SuiteError, match=r"ref.json: metric reference not found.*--update"):
        load_reference(path)
    path.write_text('{"tolerance": {"iou": 0.1,')
    with pytest.raises(SuiteError, match=r"ref.json: not valid JSON .* at line 1"):
        load_reference(path)
    path.write_text(json.dumps({"tolerance": {"iou": 0.1}, "metrics": []}))
    with pytest.raises(SuiteError, match=r'ref.json: tolerance for "biou"'):
        load_reference(path)
    row = {"method": "m", "backbone": "b", "prompt_mode": "p", "stage": "s", "dataset": "d"}
    path.write_text(json.dumps({"tolerance": DEFAULT_TOLERANCE, "metrics": [row]}))
    with pytest.raises(SuiteError, match=r'"metrics" row 0 lacks iou, biou, n'):
        load_reference(path)
    full = {**row, "iou": 0.5, "biou": "high", "n": 1}
    path.write_text(json.dumps({"tolerance": DEFAULT_TOLERANCE, "metrics": [full]}))
    with pytest.raises(SuiteError, match="biou must be a number or null"):
        load_reference(path)


@pytest.fixture()
def records_folder(tmp_path):
    """Two methods' records as the harness lays them out: <out>/<method>/<backbone>/."""
    records = hand_records()
    for method, part in records.groupby("method"):
        folder = tmp_path / "eval" / method / "tiny"
        folder.mkdir(parents=True)
        part.to_parquet(folder / "records.parquet", index=False)
    return tmp_path / "eval"


def test_cli_passes_on_match_and_fails_on_a_planted_regression(records_folder, tmp_path, capsys):
    reference = tmp_path / "reference" / "embedded_metrics.json"
    argv = ["regress", "--records", str(records_folder), "--reference", str(reference)]
    assert main([*argv, "--update"]) == 0
    assert f"updated {reference}" in capsys.readouterr().out
    assert main(argv) == 0
    assert "metrics match the reference" in capsys.readouterr().out

    spt_file = records_folder / "spt" / "tiny" / "records.parquet"
    spt = pd.read_parquet(spt_file)
    spt.loc[spt["stage"] == "final", "iou"] -= 0.1  # planted regression
    spt.to_parquet(spt_file, index=False)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "metric regression" in out
    moved = [line.split() for line in out.splitlines() if line.startswith("moved")]
    assert ["moved", "spt", "tiny", "box", "final", "mvtec", "iou", "0.700000", "0.600000"] in [
        fields[:9] for fields in moved
    ]

    # --update prints what changed, then the check passes against the new reference
    assert main([*argv, "--update"]) == 0
    assert "moved" in capsys.readouterr().out
    assert main(argv) == 0


def test_cli_accepts_files_and_reports_bad_input_in_one_line(records_folder, tmp_path, capsys):
    files = sorted(str(p) for p in records_folder.rglob("records.parquet"))
    reference = tmp_path / "ref.json"
    argv = ["regress", "--records", *files, "--reference", str(reference)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metric reference not found" in err and "--update" in err

    reference.write_text("not json")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {reference}: not valid JSON") and err.count("\n") == 1

    assert main(["regress", "--records", str(tmp_path / "nowhere")]) == 2
    assert "no such records file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["regress", "--records", str(tmp_path / "empty")]) == 2
    assert "no records.parquet below this folder" in capsys.readouterr().err


def test_update_keeps_a_hand_set_tolerance_and_refuses_a_malformed_one(
    records_folder, tmp_path, capsys
):
    reference = tmp_path / "ref.json"
    argv = ["regress", "--records", str(records_folder), "--reference", str(reference)]
    assert main([*argv, "--update"]) == 0
    document = json.loads(reference.read_text())
    document["tolerance"] = {"iou": 0.02, "biou": 0.03}
    reference.write_text(json.dumps(document))
    assert main([*argv, "--update"]) == 0
    assert json.loads(reference.read_text())["tolerance"] == {"iou": 0.02, "biou": 0.03}

    document["tolerance"] = {"iou": "loose", "biou": 0.03}
    reference.write_text(json.dumps(document))
    before = reference.read_text()
    capsys.readouterr()
    assert main([*argv, "--update"]) == 2  # not silently reset to the default
    err = capsys.readouterr().err
    assert err.startswith(f'error: {reference}: tolerance for "iou"') and err.count("\n") == 1
    assert "--update" not in err and 'edit "tolerance"' in err
    assert reference.read_text() == before


def test_kept_tolerance_and_write_reference_keep_what_was_set(tmp_path):
    path = tmp_path / "ref.json"
    assert kept_tolerance(path) == DEFAULT_TOLERANCE
    write_reference(path, {"metrics": []}, {"iou": 0.5, "biou": 0.25})
    write_reference(path, {"metrics": []})  # no tolerance given: the file's is kept
    assert kept_tolerance(path) == {"iou": 0.5, "biou": 0.25}
    path.write_text("not json")  # nothing to keep: the update rewrites the whole file
    assert kept_tolerance(path) == DEFAULT_TOLERANCE
    path.write_text(json.dumps({"tolerance": [0.1], "metrics": []}))
    with pytest.raises(SuiteError, match=r'ref.json: "tolerance" must be an object'):
        write_reference(path, {"metrics": []}, DEFAULT_TOLERANCE)


def test_wrong_records_file_is_not_called_damaged(tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image_id,dataset\na,b\n")
    with pytest.raises(SuiteError) as info:
        read_records(manifest)
    message = str(info.value)
    assert "not an `spt evaluate` records file" in message and "records.parquet" in message
    assert "delete" not in message
    table = tmp_path / "other.parquet"
    pd.DataFrame({"image_id": ["a"]}).to_parquet(table)
    with pytest.raises(SuiteError, match="not an `spt evaluate` records file .*no column"):
        read_records(table)
    assert main(["regress", "--records", str(manifest), "--reference", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "not an `spt evaluate` records file" in err and "delete" not in err
