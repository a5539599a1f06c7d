"""Figures: CI bar charts, overlay grids and example picking, on hand-made records."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from PIL import Image

from spt.errors import SuiteError
from spt.harness.records import RECORD_COLUMNS
from spt.reports.figures import (
    OverlayRow,
    bar_chart,
    bar_figure,
    bar_values,
    blend,
    mask_iou,
    overlay_grid,
    pick_examples,
)
from spt.reports.paired_stats import bootstrap_mean_ci

DATASET_SIZES = {"mvtec": 12, "visa": 9}


def record(method, stage, dataset, index, iou, *, seed=0, status="ok", prompt_mode="box"):
    values = {
        "method": method,
        "backbone": "tiny",
        "seed": seed,
        "dataset": dataset,
        "category": "cat",
        "defect_type": "crack",
        "image_id": f"{dataset}/{index:03d}",
        "prompt_mode": prompt_mode,
        "stage": stage,
        "iou": iou,
        "biou": iou / 2,
        "dice": iou,
        "seconds": 0.01,
        "encode_seconds": 0.05,
        "status": status,
        "reason": "" if status == "ok" else "mask too small",
    }
    return [values[c] for c in RECORD_COLUMNS]


def make_records() -> pd.DataFrame:
    """SPT draft/final on both datasets (final with two seeds), zero_shot on mvtec only."""
    rng = np.random.default_rng(123)
    rows = []
    for dataset, size in DATASET_SIZES.items():
        for index in range(size):
            rows.append(record("spt", "draft", dataset, index, rng.uniform(0.2, 0.8)))
            for seed in (0, 1):
                rows.append(
                    record("spt", "final", dataset, index, rng.uniform(0.3, 1.0), seed=seed)
                )
            if dataset == "mvtec":
                rows.append(record("zero_shot", "final", dataset, index, rng.uniform(0.0, 0.6)))
    rows.append(record("zero_shot", "final", "mvtec", 99, np.nan, status="no_prompt"))
    rows.append(record("spt", "final", "visa", 0, 0.1, prompt_mode="points-1"))  # other mode
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def per_image_by_hand(records, method, stage, dataset) -> np.ndarray:
    """Seed-averaged IoU per image of one method/stage/dataset under box prompts, by image id."""
    sums: dict[str, list[float]] = {}
    for row in records.itertuples():
        if (row.method, row.stage, row.dataset, row.prompt_mode) != (method, stage, dataset, "box"):
            continue
        if row.status == "ok":
            sums.setdefault(row.image_id, []).append(row.iou)
    return np.array([sum(v) / len(v) for _, v in sorted(sums.items())])


def percentile_bootstrap(values, seed_parts, n_boot, level=0.95) -> tuple[float, float]:
    rng = np.random.default_rng(seed_parts)
    means = [values[rng.integers(0, values.size, values.size)].mean() for _ in range(n_boot)]
    return tuple(np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2]))


def rng_parts(seed, *names):
    return [seed, *(zlib.crc32(n.encode()) for n in names)]


def test_bar_values_are_seed_averaged_means_with_percentile_bootstrap_cis():
    records = make_records()
    values = bar_values(records, "tiny", "box", "iou", seed=7, n_boot=400)
    row = values.set_index(["label", "dataset"]).loc[("spt (final)", "visa")]
    sample = per_image_by_hand(records, "spt", "final", "visa")
    assert row["n_images"] == DATASET_SIZES["visa"]
    assert row["mean"] == pytest.approx(sample.mean())
    expected = percentile_bootstrap(sample, rng_parts(7, "spt (final)", "visa"), 400)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(expected)
    # the same interval as the suite's paired-statistics bootstrap given the same generator seed
    suite = bootstrap_mean_ci(sample, seed=rng_parts(7, "spt (final)", "visa"), n_boot=400)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(suite)


def test_mean_group_is_a_stratified_bootstrap_of_the_unweighted_mean():
    records = make_records()
    values = bar_values(records, "tiny", "box", "iou", seed=3, n_boot=300)
    row = values.set_index(["label", "dataset"]).loc[("spt (draft)", "mean")]
    samples = {d: per_image_by_hand(records, "spt", "draft", d) for d in DATASET_SIZES}
    assert row["mean"] == pytest.approx(np.mean([s.mean() for s in samples.values()]))
    replicate_means = []
    generators = {d: np.random.default_rng(rng_parts(3, "spt (draft)", d)) for d in samples}
    draws = {d: generators[d].integers(0, s.size, (300, s.size)) for d, s in samples.items()}
    for b in range(300):
        replicate_means.append(np.mean([samples[d][draws[d][b]].mean() for d in samples]))
    expected = np.percentile(replicate_means, [2.5, 97.5])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(expected))
    assert row["n_images"] == sum(DATASET_SIZES.values())


def test_a_method_missing_a_dataset_gets_no_mean_bar_and_no_prompt_images_are_left_out():
    values = bar_values(make_records(), "tiny", "box", n_boot=50)
    zero_shot = values[values["label"] == "zero_shot"]
    assert zero_shot["dataset"].tolist() == ["mvtec"]
    assert zero_shot["n_images"].tolist() == [DATASET_SIZES["mvtec"]]
    assert values["label"].unique().tolist() == ["spt (draft)", "spt (final)", "zero_shot"]
    ordered = bar_values(make_records(), "tiny", "box", n_boot=50, method_order=["zero_shot"])
    assert ordered["label"].iloc[0] == "zero_shot"


def test_bootstrap_depends_on_the_seed_and_repeats_with_it():
    records = make_records()
    first = bar_values(records, "tiny", "box", seed=1, n_boot=200)
    again = bar_values(records.sample(frac=1.0, random_state=5), "tiny", "box", seed=1, n_boot=200)
    other = bar_values(records, "tiny", "box", seed=2, n_boot=200)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["ci_low"], other["ci_low"])


def test_the_drawn_error_bars_are_the_computed_intervals():
    values = bar_values(make_records(), "tiny", "box", n_boot=100)
    fig = bar_figure(values, "title", "IoU")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in bars] == ["spt (draft)", "spt (final)", "zero_shot"]
    for container in bars:
        expected = values[values["label"] == container.get_label()]
        heights = [patch.get_height() for patch in container.patches]
        assert heights == pytest.approx(expected["mean"].tolist())
        segments = container.errorbar.lines[2][0].get_segments()
        lows = [segment[0][1] for segment in segments]
        highs = [segment[1][1] for segment in segments]
        assert lows == pytest.approx(expected["ci_low"].tolist())
        assert highs == pytest.approx(expected["ci_high"].tolist())
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["mvtec", "visa", "mean\n(unweighted)"]


def test_bar_chart_writes_a_png_of_the_requested_size_and_a_pdf(tmp_path):
    out = bar_chart(
        make_records(),
        tmp_path / "figs" / "bars.png",
        "tiny",
        "box",
        n_boot=100,
        size=(8, 4),
        dpi=50,
        also_pdf=True,
    )
    assert out == tmp_path / "figs" / "bars.png"
    with Image.open(out) as image:
        assert image.size == (400, 200)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 0  # something was drawn
    assert (tmp_path / "figs" / "bars.pdf").read_bytes().startswith(b"%PDF")


def test_bar_chart_bad_inputs_are_one_line_errors(tmp_path):
    records = make_records()
    with pytest.raises(SuiteError, match="no evaluation records for backbone 'vit_h'.*tiny/box"):
        bar_chart(records, tmp_path / "a.png", "vit_h", "box")
    with pytest.raises(SuiteError, match="must end in .png"):
        bar_chart(records, tmp_path / "a.jpg", "tiny", "box")
    with pytest.raises(SuiteError, match="unknown metric"):
        bar_values(records, "tiny", "box", metric="accuracy")
    with pytest.raises(SuiteError, match="lack column"):
        bar_values(records.drop(columns=["iou"]), "tiny", "box")
    only_no_prompt = records[records["status"] != "ok"]
    with pytest.raises(SuiteError, match="no scorable iou records"):
        bar_values(only_no_prompt, "tiny", "box")
    with pytest.raises(SuiteError, match="seed must be a non-negative integer"):
        bar_values(records, "tiny", "box", seed=-1)


def test_blend_mixes_the_colour_only_inside_the_mask():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    mask = np.zeros((2, 3), dtype=bool)
    mask[0, 1] = True
    out = blend(image, mask, (200, 0, 100), alpha=0.5)
    assert out[0, 1].tolist() == [150, 50, 100]
    assert (out[~mask] == 100).all()
    assert out.dtype == np.uint8


def test_mask_iou():
    a = np.array([[1, 1, 0, 0]], dtype=bool)
    b = np.array([[0, 1, 1, 0]], dtype=bool)
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert np.isnan(mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)))


def overlay_rows() -> list[OverlayRow]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
        gt = np.zeros((40, 60), dtype=bool)
        gt[10:25, 20:40] = True
        predictions = {"spt (final)": np.roll(gt, 3, axis=1), "zero_shot": np.roll(gt, 9, axis=0)}
        if i == 1:
            del predictions["zero_shot"]  # a method without a prediction for this image
            image = image[:, :, 0]  # grey images are accepted
        rows.append(OverlayRow(f"mvtec/{i:03d}", image, gt, predictions))
    return rows


def test_overlay_grid_writes_one_panel_per_image_and_column(tmp_path):
    out = overlay_grid(overlay_rows(), tmp_path / "overlay.png", panel_inches=1.5, dpi=40)
    with Image.open(out) as image:
        # 2 rows; columns: image, ground truth, spt (final), zero_shot
        assert image.size == (4 * 60, 2 * 60)
        assert np.asarray(image.convert("L")).std() > 0


def test_overlay_grid_rejects_bad_masks_and_empty_input(tmp_path):
    rows = overlay_rows()
    bad_shape = OverlayRow("x", rows[0].image, rows[0].ground_truth[:, :10], {})
    with pytest.raises(SuiteError, match=r"overlay row 0 \(x\): ground truth mask must be bool"):
        overlay_grid([bad_shape], tmp_path / "o.png")
    as_uint8 = OverlayRow("y", rows[0].image, rows[0].ground_truth, {"m": np.zeros((40, 60))})
    with pytest.raises(SuiteError, match="m mask must be bool"):
        overlay_grid([as_uint8], tmp_path / "o.png")
    float_image = OverlayRow("z", rows[0].image / 255.0, rows[0].ground_truth, {})
    with pytest.raises(SuiteError, match="image must be uint8"):
        overlay_grid([float_image], tmp_path / "o.png")
    with pytest.raises(SuiteError, match="at least one image row"):
        overlay_grid([], tmp_path / "o.png")


def example_records(n_images=30) -> pd.DataFrame:
    rows = []
    for dataset in ("btad", "mvtec"):
        for index in range(n_images):
            iou = (index + 0.5) / n_images  # image 000 is worst, the last one best
            rows.append(record("spt", "final", dataset, index, iou))
            rows.append(record("spt", "draft", dataset, index, 1 - iou))
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def test_pick_examples_spans_good_to_poor_and_is_deterministic():
    records = example_records()
    picks = pick_examples(records, 3, seed=0)
    assert sorted(picks) == ["btad", "mvtec"]
    for dataset, ids in picks.items():
        indices = [int(i.split("/")[1]) for i in ids]
        # strata of the ranking, best first: top, middle and bottom third
        assert 20 <= indices[0] < 30 and 10 <= indices[1] < 20 and 0 <= indices[2] < 10
        assert all(i.startswith(dataset) for i in ids)
    shuffled = records.sample(frac=1.0, random_state=1)
    assert pick_examples(shuffled, 3, seed=0) == picks


def test_pick_examples_depends_on_seed_and_reference():
    records = example_records()
    by_seed = {tuple(pick_examples(records, 3, seed=s)["mvtec"]) for s in range(10)}
    assert len(by_seed) > 1
    draft = pick_examples(records, 3, seed=0, stage="draft")["mvtec"]
    assert int(draft[0].split("/")[1]) < 10  # the draft's best images are the final's worst


def test_pick_examples_small_datasets_and_bad_input():
    records = example_records(n_images=2)
    assert pick_examples(records, 3, seed=0)["btad"] == ["btad/001", "btad/000"]
    with pytest.raises(
        SuiteError, match=r"reference wesam \(final\).*spt \(draft\), spt \(final\)"
    ):
        pick_examples(records, 3, seed=0, method="wesam")
    with pytest.raises(SuiteError, match="n_per_dataset must be a positive integer"):
        pick_examples(records, 0, seed=0)
