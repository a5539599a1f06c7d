"""The analyses beyond the anchors (docs/analyses.md): robustness evaluations (level 0 and
severity 0 are the clean protocol exactly; the same prompts and images for every method and any
number of processes), nested label-efficiency subsets, leave-one-dataset-out training that never
sees the held-out images, and the analysis reports against independent computations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spt.cli import main
from spt.harness.records import records_table, write_records

ROOT = Path(__file__).resolve().parents[1]
TIMING = ["seconds", "encode_seconds"]
ROBUSTNESS = {
    "box_shift": [0.0, 0.2],
    "box_scale": [0.0],
    "box_hqsam": [1.0],
    "point_counts": [1, 3],
    "click_px": [0.0, 64.0],
    "click_points": 3,
    "coarse_tolerance": [0.05, 0.3],
    "corruptions": ["gaussian_noise", "motion_blur"],
    "severities": [2],
    "corruption_modes": ["box", "points-1"],
}


def _params(folder: Path, **evaluate) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    document = {"analyses": {"robustness": ROBUSTNESS}}
    if evaluate:
        document["evaluate"] = evaluate
    path.write_text(yaml.safe_dump(document))
    return path


def _robustness_args(params: Path, prepared: Path, out: Path, method: str) -> list[str]:
    extra = [] if method == "zero_shot" else ["--untrained"]
    return [
        "robustness", "--params", str(params), "--method", method, "--datasets", "mtd_twin",
        "--prepared-root", str(prepared), "--out", str(out), "--chunk-size", "3",
        "--no-progress", *extra,
    ]  # fmt: skip


def _all_records(root: Path) -> dict[str, pd.DataFrame]:
    return {
        path.parent.relative_to(root).as_posix(): pd.read_parquet(path).drop(columns=TIMING)
        for path in sorted(root.rglob("records.parquet"))
        if "parts" not in path.parts
    }


@pytest.fixture(scope="module")
def robust_one(synthetic_prepared, tmp_path_factory):
    """`spt robustness` of zero_shot and (untrained) lora, one process, with the prompts and
    corrupted images each method was given."""
    import spt.harness.evaluate as evaluation

    folder = tmp_path_factory.mktemp("robust_one")
    params = _params(folder)
    seen: dict[str, dict] = {}
    clicks: dict[str, dict] = {}  # method -> (image id, mode) -> (positive clicks, on background)
    build_prompt, corrupt = evaluation.build_prompt, evaluation.corrupt

    def recording_prompt(mode, mask, seed, image_id, *args, **kwargs):
        prompt = build_prompt(mode, mask, seed, image_id, *args, **kwargs)
        seen[current]["prompt", image_id, mode] = prompt
        if prompt.point_coords is not None:  # counted here, on the mask the harness used
            positive = prompt.point_labels.ravel() == 1
            x, y = prompt.point_coords.reshape(-1, 2)[positive].T.astype(int)
            clicks[current][image_id, mode] = (int(positive.sum()), int((mask[y, x] <= 128).sum()))
        return prompt

    def recording_corrupt(image, name, severity, *, seed, image_id):
        result = corrupt(image, name, severity, seed=seed, image_id=image_id)
        seen[current]["image", image_id, name, severity] = result.copy()
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(evaluation, "build_prompt", recording_prompt)
    mp.setattr(evaluation, "corrupt", recording_corrupt)
    try:
        for current in ("zero_shot", "lora"):
            seen[current], clicks[current] = {}, {}
            assert main(_robustness_args(params, synthetic_prepared, folder / "out", current)) == 0
    finally:
        mp.undo()
    return folder, _all_records(folder / "out"), seen, clicks


def test_every_method_meets_the_same_prompts_and_images(robust_one):
    _, _, seen, _ = robust_one
    zero_shot, lora = seen["zero_shot"], seen["lora"]
    assert zero_shot.keys() == lora.keys()
    assert any(key[0] == "image" for key in zero_shot)
    assert any(key[0] == "prompt" and "+click" in key[2] for key in zero_shot)
    for key, value in zero_shot.items():
        other = lora[key]
        if key[0] == "image":
            assert np.array_equal(value, other), key
        else:
            assert value.equals(other), key


def test_level_zero_and_severity_zero_are_the_clean_protocol(robust_one, synthetic_prepared):
    folder, records, _, _ = robust_one
    prompts = records["zero_shot/tiny/prompts"]
    metrics = ["iou", "biou", "dice", "status", "reason"]

    def rows(frame: pd.DataFrame, name: str) -> pd.DataFrame:
        return frame[frame["prompt_mode"] == name].reset_index(drop=True)[metrics]

    # the analysis scores each curve's clean level as the clean mode itself, once
    assert {"box", "points-3", "coarse"} <= set(prompts["prompt_mode"])
    assert not {"box+shift0", "points-3+click0", "coarse+tol0.05"} & set(prompts["prompt_mode"])
    # and the perturbation code at level 0 gives exactly those records
    level_zero = folder / "level_zero"
    argv = [
        "evaluate", "--params", str(folder / "params.yaml"), "--method", "zero_shot",
        "--datasets", "mtd_twin", "--prepared-root", str(synthetic_prepared), "--out",
        str(level_zero), "--no-progress", "--prompt-modes", "box+shift0", "box+scale0",
        "box+hqsam0", "points-3+click0", "coarse+tol0.05", "box", "points-1",
    ]  # fmt: skip
    assert main(argv) == 0
    clean = pd.read_parquet(level_zero / "zero_shot" / "tiny" / "records.parquet")
    for zero, protocol in [
        ("box+shift0", "box"), ("box+scale0", "box"), ("box+hqsam0", "box"),
        ("points-3+click0", "points-3"), ("coarse+tol0.05", "coarse"),
    ]:  # fmt: skip
        pd.testing.assert_frame_equal(rows(clean, zero), rows(prompts, protocol), check_exact=True)
    # the perturbed levels really differ
    assert not rows(prompts, "box+shift0.2")["iou"].equals(rows(prompts, "box")["iou"])
    # severity 0 (the images/clean run) is `spt evaluate` on the same modes
    images_clean = records["zero_shot/tiny/images/clean"]
    for name in ("box", "points-1"):
        pd.testing.assert_frame_equal(rows(images_clean, name), rows(clean, name), check_exact=True)
    noisy = records["zero_shot/tiny/images/gaussian_noise-2"]
    assert not rows(noisy, "box")["iou"].equals(rows(images_clean, "box")["iou"])


def test_two_processes_write_the_records_of_one(robust_one, synthetic_prepared, tmp_path):
    _, reference, _, _ = robust_one
    params = _params(tmp_path, processes=2)  # relaunches itself under torchrun
    argv = [sys.executable, "-m", "spt.cli", *_robustness_args(params, synthetic_prepared,
            tmp_path / "out", "zero_shot")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    got = _all_records(tmp_path / "out")
    expected = {k: v for k, v in reference.items() if k.startswith("zero_shot/")}
    assert got.keys() == expected.keys() and len(got) == 4  # prompts, clean, 2 corruptions
    for key in got:
        pd.testing.assert_frame_equal(got[key], expected[key], check_exact=True)
    placement = "zero_shot/tiny/prompts/click_placement.csv"
    assert (tmp_path / "out" / placement).read_bytes() == (
        robust_one[0] / "out" / placement
    ).read_bytes()


def test_the_robustness_report_matches_the_records(robust_one, tmp_path):
    folder, records, _, _ = robust_one
    out = tmp_path / "report"
    params = folder / "params.yaml"
    argv = ["analysis", "robustness", "--params", str(params), "--records-root",
            str(folder / "out"), "--out", str(out), "--backbone", "tiny"]  # fmt: skip
    assert main(argv) == 0
    curves = pd.read_csv(out / "robustness_prompts.csv")
    prompts = records["lora/tiny/prompts"]
    for mode, curve, level in [("box+shift0.2", "box_shift", 0.2), ("points-3", "point_count", 3)]:
        values = prompts[(prompts["prompt_mode"] == mode) & (prompts["stage"] == "final")]
        expected = values.loc[values["status"] == "ok", "iou"].mean()
        row = curves[(curves["curve"] == curve) & (curves["level"] == level)
                     & (curves["method"] == "lora")]  # fmt: skip
        assert len(row) == 1 and row["mean"].iloc[0] == pytest.approx(expected, abs=1e-12)
    # the change from clean is the mean per-image difference against the clean run
    images = pd.read_csv(out / "robustness_images.csv")
    noisy, clean = records["lora/tiny/images/motion_blur-2"], records["lora/tiny/images/clean"]
    key = ["image_id", "prompt_mode"]
    pairs = noisy.merge(clean, on=key, suffixes=("", "_clean"))
    pairs = pairs[(pairs["prompt_mode"] == "box") & (pairs["status"] == "ok")
                  & (pairs["status_clean"] == "ok")]  # fmt: skip
    row = images[(images["name"] == "motion_blur") & (images["method"] == "lora")
                 & (images["prompt_mode"] == "box")]  # fmt: skip
    assert row["change"].iloc[0] == pytest.approx((pairs["iou"] - pairs["iou_clean"]).mean())
    text = (out / "robustness.md").read_text()
    assert (
        "## Prompt robustness" in text and "## Image robustness" in text and "**Reading.**" in text
    )
    assert (out / "robustness_prompts.png").stat().st_size > 0
    assert (out / "robustness_images.png").stat().st_size > 0
    # spt is not among these methods: the report names that plainly
    assert "no paired tests" in text.lower() or "after Holm" in text


def test_click_placement_counts_the_clicks_each_method_was_given(robust_one):
    folder, records, _, clicks = robust_one
    tables = {
        method: pd.read_csv(folder / "out" / method / "tiny" / "prompts" / "click_placement.csv")
        for method in ("zero_shot", "lora")
    }
    pd.testing.assert_frame_equal(tables["zero_shot"], tables["lora"])
    table = tables["zero_shot"]
    assert set(table["prompt_mode"]) == {"points-3+click64"}  # level 0 is the clean prompt
    # one row per scored image of the mode, counted as the harness's prompts were built
    scored = records["zero_shot/tiny/prompts"]
    scored = scored[(scored["prompt_mode"] == "points-3+click64") & (scored["status"] == "ok")]
    assert sorted(table["image_id"]) == sorted(scored["image_id"].unique())
    for row in table.itertuples():
        for method in ("zero_shot", "lora"):
            assert clicks[method][row.image_id, row.prompt_mode] == (row.clicks, row.outside)
    assert (table["clicks"] == 3).all()
    # 64 px at 1024 is 8 px on the tiny backbone's 128-px input: some clicks leave the defect
    assert 0 < table["outside"].sum() < table["clicks"].sum()


def test_the_report_gives_the_share_of_clicks_that_left_the_defect(robust_one, tmp_path, capsys):
    import shutil

    folder, _, _, _ = robust_one
    root = tmp_path / "out"
    shutil.copytree(folder / "out", root)
    argv = ["analysis", "robustness", "--params", str(folder / "params.yaml"), "--records-root",
            str(root), "--out", str(tmp_path / "report"), "--backbone", "tiny"]  # fmt: skip
    assert main(argv) == 0
    table = pd.read_csv(root / "lora" / "tiny" / "prompts" / "click_placement.csv")
    (row,) = pd.read_csv(tmp_path / "report" / "robustness_clicks.csv").itertuples()
    assert (row.prompt_mode, row.level, row.images) == ("points-3+click64", 64, len(table))
    assert (row.clicks, row.outside) == (table["clicks"].sum(), table["outside"].sum())
    assert row.share_outside == pytest.approx(table["outside"].sum() / table["clicks"].sum())
    assert row.images_with_outside == (table["outside"] > 0).sum()
    text = (tmp_path / "report" / "robustness.md").read_text()
    assert f"64 px: {row.share_outside:.1%} of {row.clicks}" in text

    # methods that met other clicks, or a method without the file, are one-line errors
    path = root / "lora" / "tiny" / "prompts" / "click_placement.csv"
    table.assign(outside=table["outside"] + 1).to_csv(path, index=False)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differ: the two methods met other clicks" in err
    path.unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: missing" in err


def test_clicks_outside_by_hand():
    from spt.harness.placement import clicks_outside
    from spt.harness.prompts import Prompt

    mask = np.zeros((8, 8), np.float32)
    mask[2:4, 2:5] = 255.0  # rows 2-3, columns 2-4
    coords = np.array([[[2, 2], [4, 3], [5, 3], [0, 0]]], np.float32)  # (x, y)
    labels = np.array([[1, 1, 1, 0]], np.float32)  # the negative click is not counted
    assert clicks_outside(Prompt("points-pn", point_coords=coords, point_labels=labels), mask) == (
        3,
        1,
    )
    assert clicks_outside(Prompt("box", boxes=np.zeros((1, 4), np.float32)), mask) == (0, 0)


# --- label efficiency and transfer: training ------------------------------------------------


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two")
    raw, prepared = root / "raw", root / "prepared"
    (root / "params.yaml").touch()
    argv = ["synth", "--out", str(raw), "--layouts", "mtd", "btad", "--defects-per-type", "6"]
    assert main(argv) == 0
    argv = ["prepare", "--params", str(root / "params.yaml"), "--synthetic", str(raw), "--out",
            str(prepared), "--datasets", "mtd_twin", "btad_twin"]  # fmt: skip
    assert main(argv) == 0
    return prepared


def _train(prepared: Path, out: Path, *extra: str) -> pd.DataFrame:
    (out.parent / "params.yaml").touch()
    argv = [
        "train", "--params", str(out.parent / "params.yaml"), "--method", "lora",
        "--datasets", "mtd_twin", "btad_twin", "--prepared-root", str(prepared),
        "--epochs", "1", "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip
    assert main(argv) == 0
    return pd.read_csv(out / "lora" / "tiny" / "training_images.csv", dtype=str)


def test_label_efficiency_subsets_are_nested(two_datasets, tmp_path):
    from spt.training.run import per_category_subset, training_rows

    rows = training_rows(two_datasets, ["mtd_twin", "btad_twin"])
    sets = {k: per_category_subset(rows, k, seed=0) for k in (1, 2, 3, 100)}
    per_category = rows.groupby(["dataset", "category"]).size()
    for k, subset in sets.items():
        counts = subset.groupby(["dataset", "category"]).size()
        assert counts.to_dict() == per_category.clip(upper=k).to_dict()
    for small, large in [(1, 2), (2, 3), (3, 100)]:
        assert set(sets[small]["image_id"]) <= set(sets[large]["image_id"])
    assert set(sets[100]["image_id"]) == set(rows["image_id"])
    # keyed: another seed picks other images, and a category's pick ignores the others
    assert set(per_category_subset(rows, 1, seed=1)["image_id"]) != set(sets[1]["image_id"])
    alone = rows[rows["dataset"] == "mtd_twin"]
    assert set(per_category_subset(alone, 2, seed=0)["image_id"]) == set(
        sets[2].loc[sets[2]["dataset"] == "mtd_twin", "image_id"]
    )
    # what training actually used is that subset
    used = _train(two_datasets, tmp_path / "k2", "--images-per-category", "2")
    assert set(used["image_id"]) == set(sets[2]["image_id"])


def test_leave_one_out_never_trains_on_the_held_out_dataset(two_datasets, tmp_path, capsys):
    from spt.data.manifest import read_manifest

    used = _train(two_datasets, tmp_path / "loo", "--hold-out", "btad_twin")
    btad = read_manifest(two_datasets / "btad_twin" / "manifest.csv")
    mtd = read_manifest(two_datasets / "mtd_twin" / "manifest.csv")
    assert not set(used["image_id"]) & set(btad["image_id"])
    assert set(used["dataset"]) == {"mtd_twin"}
    mtd_train = mtd[(mtd["split"] == "train") & (mtd["label"] == "defect")]
    assert set(used["image_id"]) == set(mtd_train["image_id"])
    # a held-out dataset that is not trained on is a one-line error
    (tmp_path / "params.yaml").touch()
    argv = ["train", "--params", str(tmp_path / "params.yaml"), "--method", "lora", "--datasets",
            "mtd_twin", "--prepared-root", str(two_datasets), "--hold-out", "visa_twin",
            "--epochs", "1", "--out", str(tmp_path / "bad")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --hold-out visa_twin: not among the training datasets")


# --- label efficiency and transfer: reports on records with known values -------------------


def _write(path: Path, method: str, dataset: str, values: dict[str, float], mode="box") -> None:
    rows = [
        {
            "method": method, "backbone": "tiny", "seed": 0, "dataset": dataset,
            "category": "c", "defect_type": "d", "image_id": image, "prompt_mode": mode,
            "stage": "final", "iou": value, "biou": value, "dice": value, "seconds": 0.0,
            "encode_seconds": 0.0, "status": "ok", "reason": "",
        }
        for image, value in values.items()
    ]  # fmt: skip
    path.mkdir(parents=True, exist_ok=True)
    write_records(records_table(rows), path / "records.parquet")


def _values(offset: float, n: int = 10, prefix: str = "d/") -> dict[str, float]:
    return {f"{prefix}{i}": round(0.3 + 0.04 * i + offset, 6) for i in range(n)}


def test_label_efficiency_report_gives_the_curve_and_tests(tmp_path):
    sub, main_eval = tmp_path / "le_eval", tmp_path / "eval"
    for k, gain in ((1, 0.0), (4, 0.1)):
        _write(sub / "seed0" / f"k{k}" / "spt" / "tiny", "spt", "d", _values(gain + 0.05))
        _write(sub / "seed0" / f"k{k}" / "lora" / "tiny", "lora", "d", _values(gain))
    for method, offset in (("spt", 0.25), ("lora", 0.2), ("zero_shot", -0.1)):
        _write(main_eval / "seed0" / method / "tiny", method, "d", _values(offset))
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"analyses": {"label_efficiency": {"methods": ["spt", "lora"]}}})
    )
    out = tmp_path / "report"
    argv = ["analysis", "label_efficiency", "--params", str(params), "--records-root", str(sub),
            "--eval-root", str(main_eval), "--train-root", str(tmp_path / "none"),
            "--subset-train-root", str(tmp_path / "none"), "--out", str(out),
            "--metrics", str(tmp_path / "m" / "le.json")]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "m" / "le.json").read_text())
    assert metrics["box.k1.lora.iou"] == pytest.approx(
        np.mean(list(_values(0.0).values())), abs=1e-6
    )
    assert set(metrics) == {f"box.k{k}.{m}.iou" for k in ("1", "4", "all") for m in ("spt", "lora")}
    table = pd.read_csv(out / "label_efficiency.csv", dtype={"k": str})
    means = table.set_index(["k", "method"])["mean"]
    assert means["1", "lora"] == pytest.approx(np.mean(list(_values(0.0).values())))
    assert means["4", "spt"] == pytest.approx(np.mean(list(_values(0.15).values())))
    assert means["all", "spt"] == pytest.approx(np.mean(list(_values(0.25).values())))
    tests = pd.read_csv(out / "label_efficiency_significance.csv", dtype={"k": str})
    assert list(tests["k"]) == ["1", "4", "all"]
    assert (tests["verdict"] == "better").all()  # spt is above lora on every one of 10 images
    assert np.allclose(tests["mean_diff"], [0.05, 0.05, 0.05])
    text = (out / "label_efficiency.md").read_text()
    assert "spt" in text and "![label efficiency](label_efficiency.png)" in text


def test_transfer_report_puts_in_domain_against_held_out(tmp_path):
    held, main_eval = tmp_path / "tr_eval", tmp_path / "eval"
    _write(held / "seed0" / "without_d" / "spt" / "tiny", "spt", "d", _values(0.0))
    _write(held / "seed0" / "without_d" / "lora" / "tiny", "lora", "d", _values(-0.1))
    for method, offset in (("spt", 0.02), ("lora", 0.0), ("zero_shot", -0.2)):
        _write(main_eval / "seed0" / method / "tiny", method, "d", _values(offset))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"analyses": {"transfer": {"methods": ["spt", "lora"],
                                                                "held_out": ["d"]}}}))  # fmt: skip
    out = tmp_path / "report"
    argv = ["analysis", "transfer", "--params", str(params), "--records-root", str(held),
            "--eval-root", str(main_eval), "--out", str(out), "--metrics",
            str(tmp_path / "transfer.json")]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "transfer.json").read_text())
    assert metrics["box.d.lora.change"] == pytest.approx(-0.1, abs=1e-6)
    assert "box.d.zero_shot.change" not in metrics and "box.d.zero_shot.held_out_iou" in metrics
    table = pd.read_csv(out / "transfer.csv").set_index("method")
    assert table.loc["lora", "change"] == pytest.approx(-0.1)
    assert table.loc["spt", "change"] == pytest.approx(-0.02)
    assert table.loc["spt", "in_domain"] == pytest.approx(np.mean(list(_values(0.02).values())))
    assert table.loc["zero_shot", "held_out_iou"] == pytest.approx(
        table.loc["zero_shot", "in_domain"]
    )
    tests = pd.read_csv(out / "transfer_significance.csv")
    assert set(tests["part"]) == {"gap", "reference"}
    versus = tests[tests["part"] == "reference"]
    assert list(versus["baseline"]) == ["lora"] and versus["verdict"].iloc[0] == "better"
    assert "in-domain" in (out / "transfer.md").read_text()


def test_the_params_schema_knows_every_corruption():
    from spt.config.sections import CORRUPTION_NAMES
    from spt.harness.corruptions import CORRUPTIONS

    assert CORRUPTION_NAMES == CORRUPTIONS


def test_analysis_stages_depend_on_every_evaluate_param_but_their_modes():
    """The analyses' evaluations score their own prompt modes (analyses.*): every other
    evaluate.* setting changes their records and is a dependency; processes changes none."""
    import dataclasses

    from spt.config.sections import EvaluateSection

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    wanted = {f"evaluate.{f.name}" for f in dataclasses.fields(EvaluateSection)}
    wanted -= {"evaluate.processes", "evaluate.prompt_modes"}
    expected_modes = {
        "robustness_zero_shot": "analyses.robustness",
        "robustness": "analyses.robustness",
        "label_efficiency_evaluate": "analyses.label_efficiency.prompt_modes",
        "transfer_evaluate": "analyses.transfer.prompt_modes",
    }
    for name, modes in expected_modes.items():
        stage = stages[name].get("do", stages[name])
        given = {p for p in stage["params"] if str(p).startswith("evaluate")}
        assert given == wanted, f"{name}: {sorted(given ^ wanted)}"
        assert modes in stage["params"], name


def test_an_analysis_without_its_records_or_with_a_stray_folder_is_one_line(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.touch()
    argv = ["analysis", "robustness", "--params", str(params), "--records-root",
            str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tiny records.parquet below it" in err[0]
    # a folder under images/ that is no corruption label names itself
    root = tmp_path / "robust"
    _write(root / "seed0" / "spt" / "tiny" / "prompts", "spt", "d", _values(0.0), mode="box+shift0")
    _write(root / "seed0" / "spt" / "tiny" / "images" / "clean", "spt", "d", _values(0.0))
    _write(root / "seed0" / "spt" / "tiny" / "images" / "fog-9", "spt", "d", _values(0.0))
    argv[argv.index("--records-root") + 1] = str(root)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "images/fog-9: not a corruption folder" in err[0]


def test_evaluate_for_an_analysis_scores_that_analysis_modes(synthetic_prepared, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {"analyses": {"label_efficiency": {"prompt_modes": ["points-1", "box+shift0.1"]}}}
        )
    )
    argv = ["evaluate", "--params", str(params), "--method", "zero_shot", "--datasets", "mtd_twin",
            "--prepared-root", str(synthetic_prepared), "--out", str(tmp_path / "ev"),
            "--limit", "2", "--no-progress", "--analysis", "label_efficiency"]  # fmt: skip
    assert main(argv) == 0
    records = pd.read_parquet(tmp_path / "ev" / "zero_shot" / "tiny" / "records.parquet")
    assert set(records["prompt_mode"]) == {"points-1", "box+shift0.1"}
    capsys.readouterr()
    assert main([*argv, "--prompt-modes", "box"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --analysis names the prompt modes: drop --prompt-modes"


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ({"robustness": {"box_scale": [2.0]}}, "box_scale", "in [0, 1]"),
        ({"robustness": {"corruptions": ["fog"]}}, "corruptions", "names 'fog'"),
        ({"robustness": {"severities": [0]}}, "severities", "in [1, 5]"),
        ({"robustness": {"corruption_modes": ["boxx"]}}, "corruption_modes", "unknown prompt mode"),
        ({"label_efficiency": {"k": [0]}}, "k", "in [1, 1000000]"),
        ({"label_efficiency": {"k": []}}, "k", "at least one"),
        ({"transfer": {"held_out": []}}, "held_out", "at least one"),
        ({"transfer": {"prompt_modes": ["coarse+tol0"]}}, "prompt_modes", "unknown prompt mode"),
    ],
)
def test_bad_analysis_params_are_one_line_naming_the_key(tmp_path, section, value, message):
    from spt.config.loader import load_config
    from spt.errors import SuiteError

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"analyses": section}))
    with pytest.raises(SuiteError) as caught:
        load_config(path, required=True)
    text = str(caught.value)
    assert "\n" not in text and f"analyses.{next(iter(section))}.{value}" in text, text
    assert message in text, text
