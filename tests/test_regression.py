"""The metric regression check: reference summaries, tolerance, planted regressions, the two
check modes (bit-identical numerics: tight; other numerics: within the seed spread), the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spt.cli import main
from spt.errors import SuiteError
from spt.harness.records import RECORD_COLUMNS as HARNESS_COLUMNS
from spt.harness.records import read_numerics, read_records, records_table, write_records
from spt.reports.regression import (
    DEFAULT_TOLERANCE,
    SPREAD,
    SPREAD_K,
    TIGHT,
    check_regression,
    common_numerics,
    kept_tolerance,
    load_reference,
    pooled_seed_sd,
    summarise_for_reference,
    write_reference,
)

# spt.numerics.describe() of a portable run, by hand (tests must not depend on this CPU)
PORTABLE = {
    "mode": "portable",
    "arch": "x86_64",
    "cpu_vendor": "GenuineIntel",
    "cpu_model": "Test CPU A",
    "cpu_hardware_isa": "AVX2",
    "cpu_fma": "yes",
    "aten_capability": "DEFAULT",
    "numpy_dispatch": "baseline",
    "threads": 1,
    "device": "cpu",
    "torch": "2.5.1",
    "numpy": "2.1.3",
    "mkl": "2024.2",
    "onednn": "3.5.3",
    "libc": "glibc-2.36",
    "python": "3.12.7",
}
# another CPU model in portable mode: the same fingerprint
PORTABLE_OTHER_CPU = {**PORTABLE, "cpu_vendor": "AuthenticAMD", "cpu_model": "Test CPU B"}
NATIVE = {**PORTABLE, "mode": "native", "aten_capability": "AVX2", "numpy_dispatch": "X86_V3"}
NO_FMA = {**PORTABLE, "cpu_model": "Old CPU", "cpu_hardware_isa": "SSE4.2", "cpu_fma": "no"}

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
        "seeds": {"0": {"iou": 0.6, "biou": 0.5, "n": 3}},
    }
    assert rows[("spt", "draft", "mvtec")]["iou"] == pytest.approx(0.6)  # the NaN-BIoU image out
    assert rows[("spt", "draft", "mvtec")]["n"] == 2
    mean = rows[("spt", "final", "mean")]
    assert mean["iou"] == pytest.approx(round((0.7 + 0.5) / 2, 6))
    assert mean["biou"] == pytest.approx(round((0.4 + 0.4) / 2, 6))
    assert mean["n"] == 5
    assert mean["seeds"]["0"] == {"iou": mean["iou"], "biou": mean["biou"], "n": 5}
    assert summarise_for_reference(hand_records())["seeds"] == [0]
    assert len(rows) == 5 + 3  # five dataset rows plus a mean per method and stage
    assert [r["dataset"] for r in summarise_for_reference(hand_records())["metrics"]][:2] == [
        "mvtec",
        "mean",
    ]


def test_summary_averages_per_seed_means_and_rejects_duplicates():
    records = hand_records()
    extra = record("zero_shot", "final", "visa", 0, 0.9, 0.9, seed=1)  # seed 1 scores one image
    with_seed = pd.concat([records, pd.DataFrame([extra])], ignore_index=True)
    summary = summarise_for_reference(with_seed)
    row = rows_by_key(summary)[("zero_shot", "final", "visa")]
    assert row["iou"] == pytest.approx((0.6 + 0.9) / 2)
    assert row["n"] == 4  # summed over the seeds
    assert row["seeds"] == {
        "0": {"iou": 0.6, "biou": 0.5, "n": 3},
        "1": {"iou": 0.9, "biou": 0.9, "n": 1},
    }
    assert summary["seeds"] == [0, 1]
    # seed 1 has no mvtec record: its mean over datasets is null, not the visa value
    mean = rows_by_key(summary)[("zero_shot", "final", "mean")]
    assert mean["seeds"]["1"] == {"iou": None, "biou": None, "n": 1}
    assert rows_by_key(summary)[("zero_shot", "final", "mvtec")]["seeds"].keys() == {"0"}
    duplicated = pd.concat([records, records.iloc[[0]]], ignore_index=True)
    with pytest.raises(SuiteError, match="1 duplicate evaluation record"):
        summarise_for_reference(duplicated)


def reference_of(records, tmp_path, tolerance=DEFAULT_TOLERANCE, numerics=PORTABLE) -> dict:
    path = write_reference(
        tmp_path / "ref.json", summarise_for_reference(records), tolerance, numerics=numerics
    )
    return load_reference(path)


def check(records, reference, numerics=PORTABLE):
    return check_regression(summarise_for_reference(records), reference, numerics)


def test_identical_metrics_pass(tmp_path):
    reference = reference_of(hand_records(), tmp_path)
    result = check(hand_records(), reference)
    assert result.passed and result.mode == TIGHT
    assert result.diff_table() == ""
    assert result.n_compared == len(reference["metrics"])
    report = result.report()
    assert report.count("\n") == 0  # no numerics line in tight mode: just the summary
    assert report.startswith("metrics match the reference (bit-identical numerics: tight")
    # another CPU in portable mode has the same fingerprint: still tight
    assert check(hand_records(), reference, PORTABLE_OTHER_CPU).mode == TIGHT


def test_a_planted_regression_beyond_tolerance_fails_and_names_row_and_values(tmp_path):
    reference = reference_of(hand_records(), tmp_path)
    records = hand_records()
    planted = (records["method"] == "zero_shot") & (records["image_id"] == "visa/0")
    records.loc[planted, "iou"] = 0.44  # visa mean 0.6 -> 0.58: beyond the 0.005 tolerance
    result = check(records, reference)
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
    assert check(records, reference).passed
    records.loc[planted, "iou"] = 0.43  # 0.0233 > 0.02
    assert not check(records, reference).passed


def test_improvements_beyond_tolerance_also_fail(tmp_path):
    reference = reference_of(hand_records(), tmp_path)
    records = hand_records()
    records.loc[records["method"] == "spt", "biou"] += 0.05
    result = check(records, reference)
    assert {d.field for d in result.differences} == {"biou"}
    assert all(d.current > d.reference for d in result.differences)


def test_missing_new_rows_and_n_changes_fail(tmp_path):
    reference = reference_of(hand_records(), tmp_path)
    records = hand_records()
    without_draft = records[records["stage"] != "draft"]
    result = check(without_draft, reference)
    assert {d.change for d in result.differences} == {"missing"}
    assert {d.key[3] for d in result.differences} == {"draft"}
    assert "missing" in result.diff_table()

    extra = pd.DataFrame([record("zero_shot", "final", "btad", 0, 0.5, 0.5)])
    result = check(pd.concat([records, extra]), reference)
    assert ("new", "btad") in {(d.change, d.key[4]) for d in result.differences}

    one_more = pd.DataFrame([record("spt", "final", "visa", 7, 0.5, 0.3)])  # same mean, n + 1
    result = check(pd.concat([records, one_more]), reference)
    changes = {(d.change, d.key[4], d.reference, d.current) for d in result.differences}
    assert ("n changed", "visa", 3, 4) in changes


def test_reference_file_is_one_row_per_line_with_its_tolerance_seeds_and_numerics(tmp_path):
    path = write_reference(
        tmp_path / "sub" / "ref.json",
        summarise_for_reference(hand_records()),
        {"iou": 0.1, "biou": 0.2},
        numerics=PORTABLE,
    )
    text = path.read_text()
    document = json.loads(text)
    assert document["tolerance"] == {"iou": 0.1, "biou": 0.2}
    assert document["numerics"] == PORTABLE and document["seeds"] == [0]
    assert document["made_on"].startswith("made on Test CPU A (x86_64, AVX2), torch 2.5.1")
    assert "\n" not in document["made_on"]
    assert "spt regress --update" in document["description"]
    assert "pipeline.seeds=[0,1,2]" in document["description"]
    assert sum('"method"' in line for line in text.splitlines()) == len(document["metrics"])
    for line in text.splitlines():
        if '"method"' in line:
            row = json.loads(line.strip().rstrip(","))
            assert row["seeds"]["0"]["n"] == row["n"]  # per-seed values on the row's line
    with pytest.raises(SuiteError, match='tolerance for "biou" must be a non-negative number'):
        write_reference(
            tmp_path / "x.json", {"seeds": [0], "metrics": []}, {"iou": 0.1, "biou": -1},
            numerics=PORTABLE,
        )  # fmt: skip
    with pytest.raises(SuiteError, match="records of unknown numerics"):
        write_reference(tmp_path / "x.json", {"seeds": [0], "metrics": []}, numerics=None)


def new_format(**fields) -> str:
    base = {"made_on": "made on X", "numerics": PORTABLE, "seeds": [0]}
    return json.dumps({**base, "tolerance": DEFAULT_TOLERANCE, "metrics": [], **fields})


def test_malformed_references_are_one_line_errors_naming_the_file(tmp_path):
    path = tmp_path / "ref.json"
    with pytest.raises(SuiteError, match=r"ref.json: metric reference not found.*--update"):
        load_reference(path)
    path.write_text('{"tolerance": {"iou": 0.1,')
    with pytest.raises(SuiteError, match=r"ref.json: not valid JSON .* at line 1"):
        load_reference(path)
    path.write_text(new_format(tolerance={"iou": 0.1}))
    with pytest.raises(SuiteError, match=r'ref.json: tolerance for "biou"'):
        load_reference(path)
    row = {"method": "m", "backbone": "b", "prompt_mode": "p", "stage": "s", "dataset": "d"}
    path.write_text(new_format(metrics=[row]))
    with pytest.raises(SuiteError, match=r'"metrics" row 0 lacks iou, biou, n, seeds'):
        load_reference(path)
    full = {**row, "iou": 0.5, "biou": "high", "n": 1, "seeds": {}}
    path.write_text(new_format(metrics=[full]))
    with pytest.raises(SuiteError, match="biou must be a number or null"):
        load_reference(path)
    good_seed = {"iou": 0.5, "biou": 0.4, "n": 1}
    bad = [
        ({"seeds": []}, '"seeds" must be a non-empty list'),
        ({"seeds": [0, 0]}, '"seeds" must be a non-empty list of distinct'),
        ({"seeds": ["0"]}, '"seeds" must be a non-empty list'),
        ({"numerics": "portable"}, '"numerics" must be an object'),
        ({"numerics": {"arch": "x86_64"}}, '"numerics" must be an object'),
        ({"made_on": ["x"]}, '"made_on" must be a one-line string'),
        ({"metrics": [{**full, "biou": 0.4, "seeds": {}}]}, '"seeds" must be an object'),
        (
            {"metrics": [{**full, "biou": 0.4, "seeds": {"1": good_seed}}]},
            'row 0 seed 1: not in the top-level "seeds"',
        ),
        (
            {"metrics": [{**full, "biou": 0.4, "seeds": {"0": {"iou": 0.5}}}]},
            "row 0 seed 0: must be an object with iou, biou, n",
        ),
        (
            {"metrics": [{**full, "biou": 0.4, "seeds": {"0": {**good_seed, "n": -1}}}]},
            "row 0 seed 0: n must be a non-negative integer",
        ),
        (
            {"metrics": [{**full, "biou": 0.4, "n": 2, "seeds": {"0": good_seed}}]},
            r"row 0: n 2 is not the sum of its seeds' n \(1\)",
        ),
    ]
    for fields, message in bad:
        path.write_text(new_format(**fields))
        with pytest.raises(SuiteError, match=message) as info:
            load_reference(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_an_old_format_reference_asks_to_be_regenerated(tmp_path):
    path = tmp_path / "ref.json"
    row = {"method": "m", "backbone": "b", "prompt_mode": "p", "stage": "s", "dataset": "d"}
    old = {"tolerance": DEFAULT_TOLERANCE, "metrics": [{**row, "iou": 0.5, "biou": 0.4, "n": 3}]}
    path.write_text(json.dumps(old))
    with pytest.raises(SuiteError) as info:
        load_reference(path)
    message = str(info.value)
    assert message.startswith(f"{path}: no numerics, made_on, seeds: a reference in the old")
    assert "pipeline.seeds=[0,1,2]" in message and "--update" in message
    assert "\n" not in message


def write_records_file(frame: pd.DataFrame, path, numerics=PORTABLE):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_records(records_table(frame.to_dict(orient="records")), path, numerics)
    return path


@pytest.fixture()
def records_folder(tmp_path):
    """Two methods' records as the harness lays them out: <out>/<method>/<backbone>/."""
    records = hand_records()
    for method, part in records.groupby("method"):
        write_records_file(part, tmp_path / "eval" / method / "tiny" / "records.parquet")
    return tmp_path / "eval"


def test_cli_passes_on_match_and_fails_on_a_planted_regression(records_folder, tmp_path, capsys):
    reference = tmp_path / "reference" / "embedded_metrics.json"
    argv = ["regress", "--records", str(records_folder), "--reference", str(reference)]
    assert main([*argv, "--update"]) == 0
    out = capsys.readouterr().out
    assert f"updated {reference}" in out and "seed(s) 0" in out
    assert "checked only with the same numerics" in out and "pipeline.seeds=[0,1,2]" in out
    assert json.loads(reference.read_text())["numerics"] == PORTABLE
    assert main(argv) == 0
    assert "metrics match the reference (bit-identical numerics" in capsys.readouterr().out

    spt_file = records_folder / "spt" / "tiny" / "records.parquet"
    spt = read_records(spt_file)
    spt.loc[spt["stage"] == "final", "iou"] -= 0.1  # planted regression
    write_records_file(spt, spt_file)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "metric regression (bit-identical numerics: tight tolerance)" in out
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


def test_update_over_an_old_format_reference_rewrites_it_keeping_its_tolerance(
    records_folder, tmp_path, capsys
):
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"tolerance": {"iou": 0.02, "biou": 0.03}, "metrics": []}))
    argv = ["regress", "--records", str(records_folder), "--reference", str(reference)]
    assert main(argv) == 2
    assert "reference in the old format" in capsys.readouterr().err
    assert main([*argv, "--update"]) == 0
    assert "previous reference unusable" in capsys.readouterr().out
    document = load_reference(reference)
    assert document["tolerance"] == {"iou": 0.02, "biou": 0.03} and document["seeds"] == [0]
    assert main(argv) == 0


def test_kept_tolerance_and_write_reference_keep_what_was_set(tmp_path):
    path = tmp_path / "ref.json"
    empty = {"seeds": [0], "metrics": []}
    assert kept_tolerance(path) == DEFAULT_TOLERANCE
    write_reference(path, empty, {"iou": 0.5, "biou": 0.25}, numerics=PORTABLE)
    write_reference(path, empty, numerics=PORTABLE)  # no tolerance given: the file's is kept
    assert kept_tolerance(path) == {"iou": 0.5, "biou": 0.25}
    path.write_text("not json")  # nothing to keep: the update rewrites the whole file
    assert kept_tolerance(path) == DEFAULT_TOLERANCE
    path.write_text(json.dumps({"tolerance": [0.1], "metrics": []}))
    with pytest.raises(SuiteError, match=r'ref.json: "tolerance" must be an object'):
        write_reference(path, empty, DEFAULT_TOLERANCE, numerics=PORTABLE)


# --- the two modes: bit-identical numerics (tight) and other numerics (seed spread) ---------

# per prompt mode, seed -> offset of every image's IoU from BASE; the seed-to-seed sample sd
# of a row is the sd of its offsets: box 0.02, points-1 0.04, coarse 0, so the sd pooled over
# the three prompt modes is sqrt((0.02**2 + 0.04**2 + 0) / 3) = 0.025820 (BIoU: half of it)
SEED_OFFSETS = {
    "box": {0: 0.0, 1: 0.02, 2: -0.02},
    "points-1": {0: 0.0, 1: 0.04, 2: -0.04},
    "coarse": {0: 0.0, 1: 0.0, 2: 0.0},
}
BASE_IOU, BASE_BIOU = 0.5, 0.3
POOLED_SD = (0.02**2 / 3 + 0.04**2 / 3) ** 0.5


def seeded_records(seeds=(0, 1, 2), images=4, shift=None) -> pd.DataFrame:
    """One method on one dataset, three prompt modes, the given seeds; ``shift`` maps a prompt
    mode to an IoU move planted into every image of it."""
    rows = []
    for seed in seeds:
        for mode, offsets in SEED_OFFSETS.items():
            move = (shift or {}).get(mode, 0.0)
            iou = BASE_IOU + offsets.get(seed, 0.0) + move
            biou = BASE_BIOU + offsets.get(seed, 0.0) / 2
            for index in range(images):
                row = record("spt", "final", "mvtec", index, iou, biou, seed=seed)
                rows.append({**row, "prompt_mode": mode})
    return pd.DataFrame(rows, columns=HARNESS_COLUMNS)


@pytest.fixture()
def three_seed_reference(tmp_path) -> dict:
    return reference_of(seeded_records(), tmp_path, numerics=PORTABLE)


def test_the_pooled_sd_is_the_root_mean_variance_over_prompt_modes(three_seed_reference):
    from spt.reports.regression import _checked_document

    _, rows = _checked_document(three_seed_reference, "reference")
    for metric, expected in (("iou", POOLED_SD), ("biou", POOLED_SD / 2)):
        sds = pooled_seed_sd(rows, metric)
        assert set(sds) == {("", "tiny", "mvtec"), ("", "tiny", "mean")}
        assert sds[("", "tiny", "mvtec")] == pytest.approx(expected, abs=1e-6)


def test_tight_mode_compares_the_same_seeds_and_fails_on_a_small_move(three_seed_reference):
    result = check(seeded_records(seeds=(0,)), three_seed_reference, PORTABLE_OTHER_CPU)
    assert result.passed and result.mode == TIGHT
    assert "tight tolerance" in result.summary() and "seed(s) 0" in result.summary()
    # seed 1 alone is compared with the reference's seed 1, not with the mean over seeds
    assert check(seeded_records(seeds=(1,)), three_seed_reference).passed
    assert check(seeded_records(seeds=(1, 2)), three_seed_reference).passed

    result = check(seeded_records(seeds=(0,), shift={"box": 0.01}), three_seed_reference)
    assert not result.passed
    moved = {(d.key[2], d.key[4], d.field, d.tolerance) for d in result.differences}
    assert moved == {("box", "mvtec", "iou", 0.005), ("box", "mean", "iou", 0.005)}
    assert "metric regression (bit-identical numerics: tight tolerance)" in result.report()


def test_tight_mode_needs_the_current_seeds_in_the_reference(three_seed_reference):
    with pytest.raises(SuiteError) as info:
        check(seeded_records(seeds=(0, 5)), three_seed_reference)
    message = str(info.value)
    assert "seed 5 of the records is missing from the reference (seeds 0, 1, 2" in message
    assert "spt regress --update" in message and "\n" not in message


@pytest.mark.parametrize(
    ("numerics", "differs"),
    [
        (NATIVE, "mode: portable -> native; aten_capability: DEFAULT -> AVX2"),
        (NO_FMA, "cpu_fma: yes -> no"),
        (None, "numerics of the records unknown"),
    ],
)
def test_other_numerics_choose_the_spread_mode_and_say_so_in_one_line(
    three_seed_reference, numerics, differs
):
    result = check(seeded_records(seeds=(0,)), three_seed_reference, numerics)
    assert result.passed and result.mode == SPREAD
    first, *rest = result.report().splitlines()
    assert differs in first
    assert first.endswith(": comparing within the reference's seed spread, not bit-for-bit")
    assert rest == [result.summary()]
    assert f"other numerics: within the seed spread (k={SPREAD_K})" in result.summary()
    assert "seed(s) 0 against the reference's 0, 1, 2" in result.summary()


def test_spread_mode_passes_within_k_pooled_sd_and_fails_beyond(three_seed_reference):
    allowed = SPREAD_K * POOLED_SD  # 0.129: far beyond the 0.005 tolerance
    # coarse has no seed spread of its own: the pooled sd still allows the move
    within = seeded_records(seeds=(0,), shift={"coarse": allowed - 0.002, "box": -0.09})
    assert check(within, three_seed_reference, NATIVE).passed
    # tight mode would have failed the same records
    assert not check(within, three_seed_reference, PORTABLE).passed

    beyond = seeded_records(seeds=(0,), shift={"coarse": allowed + 0.002})
    result = check(beyond, three_seed_reference, NATIVE)
    assert not result.passed
    (difference,) = [d for d in result.differences if d.key[4] == "mvtec"]
    assert (difference.key[2], difference.field) == ("coarse", "iou")
    assert difference.reference == pytest.approx(BASE_IOU)
    assert difference.tolerance == pytest.approx(allowed, abs=1e-6)
    table = result.diff_table()
    assert table.splitlines()[0].split()[-1] == "allowed"
    assert f"metric regression (other numerics: within the seed spread (k={SPREAD_K}))" in (
        result.report()
    )
    # the mean over datasets is held to its own pooled spread
    assert {d.key[4] for d in result.differences} == {"mvtec", "mean"}


def test_spread_mode_compares_with_the_mean_over_all_reference_seeds(three_seed_reference):
    # seed 1 sits 0.04 above the reference mean in points-1: within the spread
    assert check(seeded_records(seeds=(1,)), three_seed_reference, NATIVE).passed
    # a tolerance floor bigger than the spread wins
    records = seeded_records(seeds=(0,), shift={"coarse": 0.15})
    reference = dict(three_seed_reference, tolerance={"iou": 0.2, "biou": 0.01})
    assert check(records, reference, NATIVE).passed


def test_an_n_change_fails_in_both_modes(three_seed_reference):
    records = seeded_records(seeds=(0,))
    extra = records.iloc[[0]].assign(image_id="mvtec/99")  # same value: the mean stays
    more = pd.concat([records, extra], ignore_index=True)
    for numerics in (PORTABLE, NATIVE):
        result = check(more, three_seed_reference, numerics)
        changes = {
            (d.change, d.key[2], d.key[4], d.reference, d.current) for d in result.differences
        }
        assert changes == {("n changed", "box", "mvtec", 4, 5), ("n changed", "box", "mean", 4, 5)}


def test_spread_mode_needs_a_reference_of_two_seeds(tmp_path):
    reference = reference_of(seeded_records(seeds=(0,)), tmp_path, numerics=PORTABLE)
    assert check(seeded_records(seeds=(0,)), reference, PORTABLE).passed
    with pytest.raises(SuiteError) as info:
        check(seeded_records(seeds=(0,)), reference, NO_FMA)
    message = str(info.value)
    assert message.startswith("numerics differ from the reference's (cpu_fma: yes -> no), and")
    assert "cannot be checked against this reference" in message
    assert "spt regress --update" in message and "pipeline.seeds=[0,1,2]" in message
    assert "\n" not in message


def test_records_files_must_share_one_fingerprint(tmp_path, capsys):
    a = write_records_file(seeded_records(seeds=(0,)), tmp_path / "a" / "records.parquet")
    b = write_records_file(seeded_records(seeds=(1,)), tmp_path / "b" / "records.parquet", NATIVE)
    c = write_records_file(
        seeded_records(seeds=(2,)), tmp_path / "c" / "records.parquet", PORTABLE_OTHER_CPU
    )
    old = tmp_path / "old" / "records.parquet"
    old.parent.mkdir()
    seeded_records(seeds=(2,)).to_parquet(old, index=False)  # written without numerics
    assert read_numerics(a) == PORTABLE and read_numerics(old) is None

    assert common_numerics([(a, PORTABLE), (c, PORTABLE_OTHER_CPU)]) == PORTABLE
    assert common_numerics([(a, PORTABLE), (old, None)]) is None  # unknown: spread mode
    with pytest.raises(SuiteError, match="records without numerics"):
        common_numerics([(a, PORTABLE), (old, None)], for_update=True)

    reference = tmp_path / "ref.json"
    for update in ([], ["--update"]):
        argv = ["regress", "--records", str(a), str(b), "--reference", str(reference), *update]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {a} and {b} were computed with other numerics (mode: ")
        assert err.count("\n") == 1
    assert not reference.exists()  # --update stopped before writing

    # a reference made from three seeds of one setup; a native run of seed 0 is then checked
    # within the spread, with the one line first
    b0 = write_records_file(seeded_records(seeds=(1,)), tmp_path / "b0" / "records.parquet")
    argv = ["regress", "--records", str(a), str(b0), str(c), "--reference", str(reference)]
    assert main([*argv, "--update"]) == 0
    assert json.loads(reference.read_text())["seeds"] == [0, 1, 2]
    capsys.readouterr()
    native0 = write_records_file(
        seeded_records(seeds=(0,), shift={"points-1": 0.05}), tmp_path / "n" / "records.parquet",
        NATIVE,
    )  # fmt: skip
    assert main(["regress", "--records", str(native0), "--reference", str(reference)]) == 0
    first, *_ = capsys.readouterr().out.splitlines()
    assert first.startswith("numerics differ from the reference's (mode: portable -> native")
    assert main(["regress", "--records", str(old), "--reference", str(reference)]) == 0
    assert capsys.readouterr().out.startswith("numerics of the records unknown")


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


def test_the_spread_pools_a_datasets_methods_since_a_seed_moves_all_prompt_modes_together(tmp_path):
    # "steady" trained three times almost identically, "noisy" not; in each, a seed moves every
    # prompt mode together. Pooled over the dataset, steady is held to the dataset's spread,
    # not to its own (which three seeds can make arbitrarily small).
    rows = []
    for method, spread in (("steady", 0.001), ("noisy", 0.04)):
        for seed, sign in ((0, 0), (1, 1), (2, -1)):
            for mode in ("box", "points-1", "coarse"):
                row = record(method, "final", "mvtec", 0, 0.5 + sign * spread, 0.3, seed=seed)
                rows.append({**row, "prompt_mode": mode})
    reference = reference_of(
        pd.DataFrame(rows, columns=HARNESS_COLUMNS), tmp_path, numerics=PORTABLE
    )
    from spt.reports.regression import _checked_document

    _, by_key = _checked_document(reference, "reference")
    pooled = pooled_seed_sd(by_key, "iou")[("", "tiny", "mvtec")]
    assert pooled == pytest.approx(((0.001**2 + 0.04**2) / 2) ** 0.5, rel=1e-4)
    moved = [
        {**r, "iou": r["iou"] + 0.03} if r["method"] == "steady" else r
        for r in rows
        if r["seed"] == 0
    ]
    current = pd.DataFrame(moved, columns=HARNESS_COLUMNS)
    assert check(current, reference, NATIVE).passed  # 0.03 < 5 x 0.028
    far = current.assign(iou=np.where(current["method"] == "steady", 0.5 + 0.2, current["iou"]))
    assert not check(far, reference, NATIVE).passed


# --- record sets: the analyses' evaluations beside the main one ------------------------------


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("seed0/spt/tiny", ""),  # the main evaluation
        ("spt/tiny", ""),
        ("seed0/spt/tiny/prompts", "prompts"),  # spt robustness
        ("seed0/spt/tiny/images/jpeg-3", "images/jpeg-3"),
        ("seed0/k1/spt/tiny", "k1"),  # label efficiency
        ("seed0/without_mtd_twin/spt/tiny", "without_mtd_twin"),  # transfer
        ("seed1/spt/tiny", "seed1"),  # not the records' seed: kept, never silently dropped
    ],
)
def test_variant_is_the_folder_less_seed_method_and_backbone(folder, expected):
    from pathlib import Path

    from spt.reports.regression import variant_of

    records = pd.DataFrame([record("spt", "final", "mvtec", 0, 0.5, 0.4)], columns=HARNESS_COLUMNS)
    assert variant_of(Path(folder), records) == expected


@pytest.fixture()
def pipeline_folders(tmp_path):
    """The main evaluation and a robustness run laid out as the pipeline writes them: the
    robustness records repeat the main ones' methods, modes and images, in sub-folders."""
    records = hand_records()
    roots = {"eval": tmp_path / "work" / "eval", "robust": tmp_path / "work" / "robust"}
    for method, part in records.groupby("method"):
        base = f"seed0/{method}/tiny"
        write_records_file(part, roots["eval"] / base / "records.parquet")
        for folder, shift in (("prompts", 0.0), ("images/jpeg-3", -0.05)):
            changed = part.assign(iou=part["iou"] + shift)
            write_records_file(changed, roots["robust"] / base / folder / "records.parquet")
    return roots


def test_analysis_records_keep_rows_of_their_own_and_are_checked(
    pipeline_folders, tmp_path, capsys
):
    reference = tmp_path / "ref.json"
    roots = [str(pipeline_folders["eval"]), str(pipeline_folders["robust"])]
    argv = ["regress", "--records", *roots, "--reference", str(reference)]
    assert main([*argv, "--update"]) == 0
    rows = json.loads(reference.read_text())["metrics"]
    by_mode = {}
    for row in rows:
        by_mode.setdefault(row["prompt_mode"], {})[
            (row["method"], row["stage"], row["dataset"])
        ] = row
    assert set(by_mode) == {"box", "robust/prompts/box", "robust/images/jpeg-3/box"}
    key = ("spt", "final", "mvtec")
    assert by_mode["box"][key]["iou"] == pytest.approx(0.7)
    assert by_mode["robust/prompts/box"][key]["iou"] == pytest.approx(0.7)
    assert by_mode["robust/images/jpeg-3/box"][key]["iou"] == pytest.approx(0.65)
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "record sets the main evaluation, robust" in out and "not checked" not in out

    # a regression in one corruption's records alone fails, naming the prefixed row
    jpeg = pipeline_folders["robust"] / "seed0/spt/tiny/images/jpeg-3/records.parquet"
    planted = read_records(jpeg)
    planted.loc[planted["stage"] == "final", "iou"] -= 0.1
    write_records_file(planted, jpeg)
    assert main(argv) == 1
    moved = [line.split()[:9] for line in capsys.readouterr().out.splitlines()]
    assert ["moved", "spt", "tiny", "robust/images/jpeg-3/box", "final", "mvtec", "iou",
            "0.650000", "0.550000"] in moved  # fmt: skip

    # the main evaluation alone is still checked, and the rows left out are named
    assert main(["regress", "--records", roots[0], "--reference", str(reference)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("metrics match the reference")
    assert out[-1].startswith("not checked: ") and "reference rows of robust" in out[-1]
    n_robust = sum(row["prompt_mode"].startswith("robust/") for row in rows)
    assert f"not checked: {n_robust} reference rows" in out[-1]


def test_an_analysis_folder_without_its_records_fails(pipeline_folders, tmp_path, capsys):
    reference = tmp_path / "ref.json"
    roots = [str(pipeline_folders["eval"]), str(pipeline_folders["robust"])]
    argv = ["regress", "--records", *roots, "--reference", str(reference)]
    assert main([*argv, "--update"]) == 0
    (pipeline_folders["robust"] / "seed0/spt/tiny/images/jpeg-3/records.parquet").unlink()
    capsys.readouterr()
    assert main(argv) == 1
    missing = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["missing", "spt", "tiny", "robust/images/jpeg-3/box", "final", "mvtec"] in [
        fields[:6] for fields in missing
    ]


def test_update_from_fewer_record_sets_says_what_it_drops(pipeline_folders, tmp_path, capsys):
    reference = tmp_path / "ref.json"
    roots = [str(pipeline_folders["eval"]), str(pipeline_folders["robust"])]
    assert main(["regress", "--records", *roots, "--reference", str(reference), "--update"]) == 0
    capsys.readouterr()
    argv = ["regress", "--records", roots[0], "--reference", str(reference), "--update"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dropped from the reference: the rows of robust (not among --records)" in out
    assert all(
        "/" not in row["prompt_mode"] for row in json.loads(reference.read_text())["metrics"]
    )


def test_default_records_are_the_pipeline_folders_that_exist(
    pipeline_folders, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["regress", "--reference", "ref.json", "--update"]) == 0
    modes = {
        row["prompt_mode"] for row in json.loads((tmp_path / "ref.json").read_text())["metrics"]
    }
    assert modes == {"box", "robust/prompts/box", "robust/images/jpeg-3/box"}
    monkeypatch.chdir(tmp_path / "work")  # no work/ folders below here
    capsys.readouterr()
    assert main(["regress", "--reference", str(tmp_path / "ref.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no records: none of work/eval" in err and "dvc repro" in err


def test_the_spread_is_pooled_per_record_set(tmp_path):
    from spt.reports.regression import _checked_document, labelled

    main_records = seeded_records()
    noisy = labelled(seeded_records(), "robust", "images/noise-5")
    # the analysis rows spread ten times as much over seeds as the main ones
    noisy["iou"] = BASE_IOU + (noisy["iou"] - BASE_IOU) * 10
    reference = reference_of(pd.concat([main_records, noisy]), tmp_path, numerics=PORTABLE)
    _, rows = _checked_document(reference, "reference")
    sds = pooled_seed_sd(rows, "iou")
    assert sds[("", "tiny", "mvtec")] == pytest.approx(POOLED_SD, abs=1e-6)  # as if alone
    assert sds[("robust", "tiny", "mvtec")] == pytest.approx(10 * POOLED_SD, abs=1e-5)
    # a main row moved beyond its own spread fails, however wide the analysis rows' spread
    moved = seeded_records(seeds=(0,), shift={"coarse": SPREAD_K * POOLED_SD + 0.002})
    current = pd.concat([moved, labelled(seeded_records(seeds=(0,)), "robust", "images/noise-5")])
    current.loc[current["prompt_mode"].str.startswith("robust/"), "iou"] = BASE_IOU
    result = check(current, reference, NATIVE)
    assert {(d.key[2], d.key[4]) for d in result.differences} == {
        ("coarse", "mvtec"),
        ("coarse", "mean"),
    }


def test_a_seed_folder_belongs_to_the_record_set_above_it(pipeline_folders, tmp_path, capsys):
    reference = tmp_path / "ref.json"
    roots = [str(pipeline_folders["eval"]), str(pipeline_folders["robust"])]
    assert main(["regress", "--records", *roots, "--reference", str(reference), "--update"]) == 0
    capsys.readouterr()
    seed_folders = [
        str(pipeline_folders["eval"] / "seed0"),
        str(pipeline_folders["robust"] / "seed0"),
    ]
    assert main(["regress", "--records", *seed_folders, "--reference", str(reference)]) == 0
    out = capsys.readouterr().out
    assert "record sets the main evaluation, robust" in out and "not checked" not in out


def test_the_spread_multiple_keeps_the_family_wise_false_alarm_rate():
    """k is the Bonferroni bound: a run that behaves like one more seed (each value's z a t with
    SPREAD_DF degrees of freedom, scaled by sqrt(1 + 1/R)) fails any of N values with chance at
    most SPREAD_ALPHA, and not far below it; never below SPREAD_K."""
    from scipy import stats

    from spt.reports.regression import SPREAD_ALPHA, SPREAD_DF, spread_k

    assert spread_k(12, 3) == SPREAD_K and spread_k(0, 3) == SPREAD_K
    previous = SPREAD_K
    for n in (588, 1000, 3288, 10_000):
        k = spread_k(n, 3)
        assert k > previous
        previous = k
        per_value = 2 * stats.t.sf(k / np.sqrt(1 + 1 / 3), SPREAD_DF)
        family = 1 - (1 - per_value) ** n
        assert SPREAD_ALPHA * 0.95 < family <= SPREAD_ALPHA + 1e-12, (n, family)
    assert round(spread_k(588, 3), 2) == 6.69 and round(spread_k(3288, 3), 2) == 8.03
    assert spread_k(3288, 10) < spread_k(3288, 3)  # a mean of more seeds scatters less


def test_the_spread_check_uses_the_multiple_for_its_number_of_values(three_seed_reference):
    from spt.reports.regression import spread_k

    result = check(seeded_records(seeds=(0,)), three_seed_reference, NATIVE)
    assert result.n_values == 2 * result.n_compared
    assert result.k == spread_k(result.n_values, 3)
    assert f"k for {result.n_values} values" in result.summary()
