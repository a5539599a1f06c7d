"""End to end: zero-shot SAM on synthetic prepared data through the harness and `spt evaluate`."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from sklearn.metrics import jaccard_score

import baselines.zero_shot as zero_shot
from spt import codegraph
from spt.cli import main
from spt.data.images import read_mask, read_rgb
from spt.data.manifest import read_manifest
from spt.errors import SuiteError
from spt.harness import method as method_module
from spt.harness.evaluate import (
    EvaluationConfig,
    ImageEvaluator,
    evaluate,
    select_images,
)
from spt.harness.method import (
    Method,
    available_methods,
    build_method,
    is_trainable,
    register_method,
)
from spt.harness.preprocess import InputFrame, image_to_input, logits_to_original, mask_to_input
from spt.harness.prompts import DEFAULT_PROMPT_MODES, build_prompt
from spt.harness.records import RECORD_COLUMNS, read_records, read_weights
from tests.harness_synthetic import write_dataset

KINDS_A = [
    ("blob", 96, 160),
    ("two_regions", 150, 120),
    ("speck", 128, 128),  # 4 pixels: points-5 and points-pn impossible
    ("vanishing", 512, 512),  # 1 pixel: gone after resizing to 128
]
KINDS_B = [("scratch", 128, 128), ("blob", 200, 180)]


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    root = tmp_path / "prepared"
    write_dataset(root, "synA", KINDS_A, seed=1)
    write_dataset(root, "synB", KINDS_B, seed=2)
    return root


def config_for(root: Path, out: Path, **overrides) -> EvaluationConfig:
    settings = dict(
        method="zero_shot",
        backbone="tiny",
        datasets=("synA", "synB"),
        prepared_roots=(str(root),),
        out_root=str(out),
        chunk_size=2,
    )
    settings.update(overrides)
    return EvaluationConfig(**settings)


@pytest.fixture
def count_encodes(monkeypatch):
    calls = []
    original = zero_shot.ZeroShotSAM.encode

    def counting(self, image):
        calls.append(image.shape)
        return original(self, image)

    monkeypatch.setattr(zero_shot.ZeroShotSAM, "encode", counting)
    return calls


def test_zero_shot_end_to_end(prepared, tmp_path, count_encodes):
    records_path = evaluate(config_for(prepared, tmp_path / "eval"), progress=False)
    records = read_records(records_path)
    n_images = len(KINDS_A) + len(KINDS_B)  # normal and train rows are not evaluated
    assert list(records.columns) == RECORD_COLUMNS
    assert len(records) == n_images * len(DEFAULT_PROMPT_MODES)
    assert len(count_encodes) == n_images  # one encoder pass per image, shared by all modes
    assert set(records["stage"]) == {"final"} and set(records["method"]) == {"zero_shot"}

    ok = records[records["status"] == "ok"]
    assert ok[["iou", "biou", "dice"]].notna().all().all()
    assert ((ok[["iou", "biou", "dice"]] >= 0) & (ok[["iou", "biou", "dice"]] <= 1)).all().all()
    assert (ok["seconds"] > 0).all() and (records["encode_seconds"] > 0).all()

    missing = records[records["status"] == "no_prompt"]
    assert missing[["iou", "biou", "dice"]].isna().all().all() and (missing["reason"] != "").all()
    vanished = missing[missing["defect_type"] == "vanishing"]
    assert len(vanished) == len(DEFAULT_PROMPT_MODES)
    speck = missing[missing["defect_type"] == "speck"]
    assert sorted(speck["prompt_mode"]) == ["points-5", "points-pn"]
    assert len(missing) == len(vanished) + len(speck)

    out_dir = records_path.parent
    summary = pd.read_csv(out_dir / "summary.csv")
    assert set(summary["level"]) == {"dataset", "category", "mean_over_datasets"}
    overall = summary[
        (summary["level"] == "mean_over_datasets") & (summary["prompt_mode"] == "box")
    ]
    per_dataset = ok[ok["prompt_mode"] == "box"].groupby("dataset")["iou"].mean()
    assert overall["iou"].item() == pytest.approx(per_dataset.mean())
    assert "Unweighted mean over datasets" in (out_dir / "summary.md").read_text()


def test_records_and_summary_name_the_weights(prepared, tmp_path, capsys):
    """Random weights are said on stderr and in summary.md; a checkpoint is named with its
    sha256 in the records' metadata and the summary."""
    records_path = evaluate(config_for(prepared, tmp_path / "random"), progress=False)
    err = capsys.readouterr().err
    assert "warning: evaluating zero_shot on a randomly initialised tiny SAM" in err
    weights = read_weights(records_path)
    assert weights["random_base"] is True and weights["checkpoint"] is None
    assert "RANDOMLY INITIALISED tiny SAM" in (records_path.parent / "summary.md").read_text()

    checkpoint = tmp_path / "tiny.pth"
    torch.save(build_method("zero_shot", "tiny").sam.state_dict(), checkpoint)
    config = config_for(prepared, tmp_path / "named", checkpoint=str(checkpoint))
    records_path = evaluate(config, progress=False)
    assert "randomly initialised" not in capsys.readouterr().err
    weights = read_weights(records_path)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert weights["random_base"] is False
    assert weights["checkpoint"] == {"path": checkpoint.as_posix(), "sha256": digest}
    summary = (records_path.parent / "summary.md").read_text()
    assert f"Weights: SAM tiny from `{checkpoint.as_posix()}` (sha256 {digest[:12]})" in summary


def test_recorded_scores_match_an_independent_recomputation(prepared, tmp_path):
    records = read_records(evaluate(config_for(prepared, tmp_path / "eval"), progress=False))
    manifest = pd.read_csv(prepared / "synB" / "manifest.csv", keep_default_na=False)
    row = manifest[manifest["defect_type"] == "blob"].query("split == 'test'").iloc[0]
    image, mask = read_rgb(Path(row["image_path"])), read_mask(Path(row["mask_path"]))
    sam = build_method("zero_shot", "tiny")
    frame = InputFrame.for_image(*mask.shape, 128)
    with torch.inference_mode():
        state = sam.encode(image_to_input(image, frame))
        prompt = build_prompt("points-3", mask_to_input(mask, frame), 0, row["image_id"], 32)
        logits = logits_to_original(sam.decode(state, prompt)["final"], frame)[0, 0].numpy()
    expected = jaccard_score((mask > 128).ravel(), (logits > 0).ravel())
    got = records.query("image_id == @row.image_id and prompt_mode == 'points-3'")["iou"].item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_rerun_resumes_and_dataset_order_does_not_matter(prepared, tmp_path, count_encodes):
    first = read_records(evaluate(config_for(prepared, tmp_path / "eval"), progress=False))
    encodes = len(count_encodes)
    again = read_records(evaluate(config_for(prepared, tmp_path / "eval"), progress=False))
    assert len(count_encodes) == encodes  # nothing recomputed
    metrics = ["dataset", "image_id", "prompt_mode", "stage", "iou", "biou", "dice", "status"]
    pd.testing.assert_frame_equal(first[metrics], again[metrics])
    reordered = config_for(prepared, tmp_path / "fresh", datasets=("synB", "synA"), chunk_size=3)
    swapped = read_records(evaluate(reordered, progress=False))
    key = ["image_id", "prompt_mode", "stage"]
    pd.testing.assert_frame_equal(
        first[metrics].sort_values(key).reset_index(drop=True),
        swapped[metrics].sort_values(key).reset_index(drop=True),
    )


def test_a_change_to_the_code_that_shapes_records_recomputes_the_chunks(
    prepared, tmp_path, count_encodes, monkeypatch
):
    config = config_for(prepared, tmp_path / "eval", limit=1)
    evaluate(config, progress=False)
    first = len(count_encodes)
    # The digest reads the source from codegraph.repository_root(): point it at a copy of the
    # suite's code, then edit the copy as a developer would edit the checkout.
    code = tmp_path / "code"
    for package in codegraph.PACKAGES:
        shutil.copytree(
            codegraph.repository_root() / package,
            code / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    monkeypatch.setattr(codegraph, "repository_root", lambda: code)
    evaluate(config, progress=False)
    assert len(count_encodes) == first  # same code: cached chunks reused
    with open(code / "spt" / "reports" / "tables.py", "a") as handle:
        handle.write("\n# a change to code evaluation does not run\n")
    evaluate(config, progress=False)
    assert len(count_encodes) == first
    for changed in ("spt/harness/metrics.py", "baselines/zero_shot.py"):
        with open(code / changed, "a") as handle:
            handle.write("\n# a change to code that shapes the records\n")
        before = len(count_encodes)
        evaluate(config, progress=False)
        assert len(count_encodes) == before + 2, changed  # one image per dataset recomputed


def test_limit_and_a_changed_seed_are_separate_work(prepared, tmp_path, count_encodes):
    records = read_records(evaluate(config_for(prepared, tmp_path / "e", limit=1), progress=False))
    assert records.groupby("dataset")["image_id"].nunique().to_dict() == {"synA": 1, "synB": 1}
    before = len(count_encodes)
    evaluate(config_for(prepared, tmp_path / "e", limit=1, seed=5), progress=False)
    assert len(count_encodes) == before + 2


def test_interrupted_write_leaves_no_partial_file(prepared, tmp_path, monkeypatch):
    def failing_write(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", failing_write)
    out = tmp_path / "eval"
    with pytest.raises(KeyboardInterrupt):
        evaluate(config_for(prepared, out), progress=False)
    leftovers = [p for p in out.rglob("*") if p.is_file()]
    # Only whole files remain: no records at all, and example masks written atomically before
    # their chunk's records (they are rewritten when the chunk is redone).
    assert not [p for p in leftovers if not p.name.endswith(".examples.npz")]
    for path in leftovers:
        with np.load(path) as data:
            assert data.files is not None  # a readable archive, not a torn write


class DraftAndFinal(Method):
    """A two-stage stand-in (like SPT) built on zero-shot SAM, to exercise the interface."""

    name = "test_two_stage"
    stages = ("draft", "final")

    def __init__(self, backbone, checkpoint=None, device="cpu", params=None):
        super().__init__(backbone, checkpoint, device, params)
        self.sam = zero_shot.ZeroShotSAM(backbone, checkpoint, device, params)

    def encode(self, image):
        return self.sam.encode(image)

    def decode(self, state, prompt):
        draft = self.sam.decode(state, prompt)["final"]
        return {"draft": draft, "final": -draft}


def test_method_registry_and_multi_stage_records(prepared, monkeypatch):
    assert "zero_shot" in available_methods()
    monkeypatch.setitem(method_module._REGISTRY, DraftAndFinal.name, DraftAndFinal)
    method = build_method("test_two_stage", "tiny")
    config = config_for(prepared, prepared, method="test_two_stage", prompt_modes=("box", "coarse"))
    row = select_images(read_manifest(prepared / "synB" / "manifest.csv")).iloc[0]
    with torch.inference_mode():
        records = ImageEvaluator(method, config).evaluate(
            row, read_rgb(Path(row["image_path"])), read_mask(Path(row["mask_path"]))
        )
    assert [(r["prompt_mode"], r["stage"]) for r in records] == [
        ("box", "draft"),
        ("box", "final"),
        ("coarse", "draft"),
        ("coarse", "final"),
    ]
    assert records[0]["seconds"] == records[1]["seconds"]  # one decode call gives both stages
    assert not is_trainable(method)  # a plain Method: nothing for `spt train` to train
    with pytest.raises(TypeError, match="used by both"):

        class Clash(Method):
            name = "zero_shot"

            def encode(self, image):
                return image

            def decode(self, state, prompt):
                return {}

        register_method(Clash)


def test_instances_and_multimask_options_run(prepared, tmp_path):
    config = config_for(
        prepared,
        tmp_path / "eval",
        datasets=("synA",),
        prompt_modes=("box", "points-1"),
        instances=True,
        method_params={"multimask_output": True},
        limit=2,
    )
    records = read_records(evaluate(config, progress=False))
    assert (records["status"] == "ok").all() and len(records) == 4


def test_longest_side_protocol_round_trips_geometry():
    frame = InputFrame.for_image(96, 160, 128, resize="longest-side")
    assert (frame.content_height, frame.content_width) == (77, 128)
    image = np.full((96, 160, 3), 200, np.uint8)
    prepared_image = image_to_input(image, frame)
    assert prepared_image.shape == (1, 3, 128, 128) and (prepared_image[..., 77:, :] == 0).all()
    logits = torch.ones(2, 1, 32, 32)
    assert logits_to_original(logits, frame).shape == (2, 1, 96, 160)


def empty_params(folder: Path) -> Path:
    """An empty params file: the built-in defaults (a named --params file must exist)."""
    path = folder / "params.yaml"
    path.touch()
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    status = main(["evaluate", "--no-progress", *args])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_cli_runs_and_reports_bad_input_in_one_line(prepared, tmp_path, capsys):
    common = [
        "--prepared-root",
        str(prepared),
        "--out",
        str(tmp_path / "o"),
        "--params",
        str(empty_params(tmp_path)),
    ]
    status, text = run_cli([*common, "--datasets", "synB", "--limit", "1"], capsys)
    assert status == 0 and "records:" in text
    records = read_records(tmp_path / "o" / "zero_shot" / "tiny" / "records.parquet")
    assert len(records) == len(DEFAULT_PROMPT_MODES)
    for bad, message in [
        (["--datasets", "nope"], "no manifest under"),
        (["--datasets", "synB", "--method", "nope"], "unknown method"),
        (["--datasets", "synB", "--prompt-modes", "lasso"], "unknown prompt mode"),
        (["--datasets", "synB", "--backbone", "vit_x"], "unknown backbone"),
        (["--datasets", "synB", "--limit", "0"], "--limit 0"),
        ([], "no datasets"),
    ]:
        status, text = run_cli([*common, *bad], capsys)
        assert status == 2, bad
        assert text.startswith("error: ") and message in text and "Traceback" not in text, text


def test_corrupt_image_is_a_one_line_error(prepared, tmp_path, capsys):
    evaluated = select_images(read_manifest(prepared / "synB" / "manifest.csv"))
    Path(evaluated["image_path"].iloc[0]).write_bytes(b"not a png")
    common = [
        "--prepared-root",
        str(prepared),
        "--out",
        str(tmp_path / "o"),
        "--params",
        str(empty_params(tmp_path)),
    ]
    status, text = run_cli([*common, "--datasets", "synB"], capsys)
    assert status == 2 and "unreadable image" in text and "Traceback" not in text


def test_examples_keep_the_same_images_for_every_method(tmp_path):
    from spt.artifacts import read_examples
    from spt.harness.evaluate import (
        EvaluationConfig,
        evaluate,
        example_ids,
        select_images,
    )

    root = tmp_path / "prepared"
    manifest = write_dataset(root, "synA", [("blob", 64, 64)] * 5, seed=3)
    kept, records = {}, {}
    for method in ("zero_shot", "spt"):
        config = EvaluationConfig(
            method=method, backbone="tiny", datasets=("synA",), prepared_roots=(str(root),),
            out_root=str(tmp_path / "eval"), prompt_modes=("box", "points-1"), example_images=2,
        )  # fmt: skip
        path = evaluate(config, progress=False)
        kept[method] = read_examples(path.parent / "examples.npz")
        records[method] = read_records(path)
    evaluated = list(select_images(read_manifest(manifest))["image_id"])
    expected = example_ids(evaluated, 0, 2)
    assert len(expected) == 2
    assert {k.split("|")[0] for k in kept["zero_shot"]} == expected
    assert {k.split("|")[0] for k in kept["spt"]} == expected
    assert {k.split("|", 1)[1] for k in kept["spt"]} == {"box|draft", "box|final"}
    # The kept mask is the very prediction that was scored.
    rows = read_manifest(manifest).set_index("image_id")
    frame = records["zero_shot"]
    for image_id in expected:
        gt = np.array(Image.open(rows.loc[image_id, "mask_path"])) > 128
        pred = kept["zero_shot"][f"{image_id}|box|final"]
        union = (gt | pred).sum()
        iou = (gt & pred).sum() / union if union else float("nan")
        row = frame[(frame.image_id == image_id) & (frame.prompt_mode == "box")]
        assert row["iou"].item() == pytest.approx(iou, abs=1e-6)


DAMAGES = ("garbage", "empty", "wrong-columns", "wrong-types", "directory", "examples")


def _damage(part: Path, damage: str) -> Path:
    """Spoil one cached chunk in one way; return the file that was spoiled."""
    target = part.with_name(part.stem + ".examples.npz") if damage == "examples" else part
    original = pq.read_table(part)
    if damage in ("garbage", "examples"):
        target.write_bytes(b"PK\x03\x04 not what it claims to be")
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "wrong-columns":
        pq.write_table(original.drop(["iou"]), target)
    elif damage == "wrong-types":
        pq.write_table(original.set_column(2, "seed", original["seed"].cast("string")), target)
    else:
        target.unlink()
        target.mkdir()
    return target


def test_damaged_cached_chunks_are_moved_aside_and_recomputed(prepared, tmp_path, capsys):
    # One image per chunk: six chunks, each damaged in another way, all repaired in one rerun.
    config = config_for(prepared, tmp_path / "eval", prompt_modes=("box",), chunk_size=1)
    first = read_records(evaluate(config, progress=False))
    parts = sorted((config.out_dir / "parts").glob("*.parquet"))
    assert len(parts) == len(DAMAGES)
    originals = {part: pq.read_table(part) for part in parts}
    damaged = [_damage(part, damage) for part, damage in zip(parts, DAMAGES, strict=True)]
    capsys.readouterr()
    again = read_records(evaluate(config, progress=False))
    warnings = [
        line
        for line in capsys.readouterr().err.splitlines()
        if "warning:" in line and "randomly initialised" not in line
    ]
    assert len(warnings) == len(DAMAGES) and all("recomputing" in w for w in warnings)
    for target in damaged:
        assert sum(w.startswith(f"warning: {target}: ") for w in warnings) == 1
        assert target.with_name(target.name + ".corrupt").exists()  # set aside, not deleted
    metrics = ["image_id", "prompt_mode", "stage", "iou", "biou", "dice", "status"]
    pd.testing.assert_frame_equal(first[metrics], again[metrics])
    for part, original in originals.items():
        pd.testing.assert_frame_equal(
            pq.read_table(part).select(metrics).to_pandas(), original.select(metrics).to_pandas()
        )


def test_records_path_taken_by_a_directory_is_a_one_line_error(prepared, tmp_path):
    config = config_for(prepared, tmp_path / "eval", datasets=("synB",), prompt_modes=("box",))
    (config.out_dir / "records.parquet").mkdir(parents=True)
    with pytest.raises(SuiteError, match=r"records\.parquet: is a directory"):
        evaluate(config, progress=False)


def test_size_mismatch_names_the_image_and_the_mask(prepared, tmp_path):
    manifest = read_manifest(prepared / "synB" / "manifest.csv")
    row = select_images(manifest).iloc[0]
    mask_path = Path(row["mask_path"])
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(mask_path)
    config = config_for(prepared, tmp_path / "eval", datasets=("synB",), prompt_modes=("box",))
    with pytest.raises(SuiteError) as info:
        evaluate(config, progress=False)
    message = str(info.value)
    assert str(row["image_path"]) in message and str(mask_path) in message
    assert "12x10" in message and "rerun `spt prepare`" in message
