"""The one aggregation rule (spt/harness/aggregate.py), checked against plain-Python arithmetic,
and the agreement of summary.md, the report's tables and the regression reference on it."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from spt.harness.aggregate import MEAN_OVER_DATASETS, group_means, mean_over_datasets, scorable
from spt.harness.records import RECORD_COLUMNS
from spt.harness.summary import summarise
from spt.reports.aggregate import dataset_means
from spt.reports.regression import summarise_for_reference
from spt.reports.tables import metric_tables

NAN = float("nan")


def record(dataset, index, iou, *, status="ok", mode="box", method="zero_shot", category="a"):
    values = {
        "method": method,
        "backbone": "tiny",
        "seed": 0,
        "dataset": dataset,
        "category": category,
        "defect_type": "crack",
        "image_id": f"{dataset}/{index}",
        "prompt_mode": mode,
        "stage": "final",
        "iou": iou,
        "biou": iou if math.isnan(iou) else iou / 2,
        "dice": iou,
        "seconds": 0.01,
        "encode_seconds": 0.05,
        "status": status,
        "reason": "" if status == "ok" else "mask too small",
    }
    return [values[c] for c in RECORD_COLUMNS]


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def test_dataset_means_then_the_unweighted_mean_over_datasets():
    records = frame(
        [
            record("big", 0, 0.2),
            record("big", 1, 0.4),
            record("big", 2, 0.6, category="b"),
            record("big", 3, NAN, status="no_prompt", category="b"),
            record("big", 4, float("inf")),  # ok but not finite: not scorable
            record("small", 0, 1.0),
        ]
    )
    assert scorable(records, "iou").tolist() == [True, True, True, False, False, True]
    per_dataset = group_means(records, ["dataset", "prompt_mode"])
    big = per_dataset.loc[("big", "box")]
    assert big["iou"] == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    assert (big["n_ok"], big["n_no_prompt"]) == (4, 1)
    overall = mean_over_datasets(per_dataset).loc["box"]
    # each dataset counts once: (mean(big) + mean(small)) / 2, not the mean over images
    assert overall["iou"] == pytest.approx(((0.2 + 0.4 + 0.6) / 3 + 1.0) / 2)
    assert overall["biou"] == pytest.approx(((0.1 + 0.2 + 0.3) / 3 + 0.5) / 2)
    assert (overall["n_ok"], overall["n_no_prompt"], overall["n_datasets"]) == (5, 1, 2)


def test_a_dataset_without_a_scorable_image_leaves_the_headline_undefined():
    records = frame(
        [
            record("d1", 0, 0.5, mode="points-5"),
            record("d2", 0, NAN, status="no_prompt", mode="points-5"),
            record("d1", 0, 0.5),
            record("d2", 0, 0.7),
        ]
    )
    per_dataset = group_means(records, ["dataset", "prompt_mode"])
    assert math.isnan(per_dataset.loc[("d2", "points-5"), "iou"])
    overall = mean_over_datasets(per_dataset)
    assert math.isnan(overall.loc["points-5", "iou"])  # not the mean over d1 alone
    assert overall.loc["box", "iou"] == pytest.approx(0.6)


def test_the_comparison_group_sets_the_datasets_a_mean_needs():
    # zero_shot ran on d1 and d2, spt on d1 only: within one (backbone, prompt mode) spt has no
    # headline; grouped by method as well, each method's own datasets count.
    rows = [record("d1", 0, 0.4), record("d2", 0, 0.8), record("d1", 0, 0.6, method="spt")]
    per_dataset = group_means(frame(rows), ["backbone", "prompt_mode", "method", "dataset"])
    shared = mean_over_datasets(per_dataset, within=["backbone", "prompt_mode"])
    assert shared.loc[("tiny", "box", "zero_shot"), "iou"] == pytest.approx(0.6)
    assert math.isnan(shared.loc[("tiny", "box", "spt"), "iou"])
    own = mean_over_datasets(per_dataset, within=["backbone", "prompt_mode", "method"])
    assert own.loc[("tiny", "box", "spt"), "iou"] == pytest.approx(0.6)


def test_summary_report_and_reference_agree_on_every_number():
    rows = [
        record("d1", 0, 0.31),
        record("d1", 1, 0.52, category="b"),
        record("d2", 0, 0.77),
        record("d2", 1, NAN, status="no_prompt"),
        record("d3", 0, 0.12),
        record("d1", 0, 0.9, mode="points-5"),
        record("d2", 0, NAN, status="no_prompt", mode="points-5"),
        record("d3", 0, 0.4, mode="points-5"),
    ]
    records = frame(rows)
    summary = summarise(records)
    headline = summary[summary["level"] == "mean_over_datasets"].set_index("prompt_mode")["iou"]
    report = dataset_means(records, "iou")  # the report's per-dataset cells
    reference = {
        (r["prompt_mode"], r["dataset"]): r["iou"]
        for r in summarise_for_reference(records)["metrics"]
    }
    by_hand = (0.415 + 0.77 + 0.12) / 3
    assert headline["box"] == pytest.approx(by_hand)
    assert reference[("box", MEAN_OVER_DATASETS)] == pytest.approx(by_hand, abs=1e-6)
    assert math.isnan(headline["points-5"]) and reference[("points-5", MEAN_OVER_DATASETS)] is None
    tables = metric_tables(records, {}, metrics=("iou",))
    assert tables[("tiny", "box")].loc["zero_shot", ("IoU", MEAN_OVER_DATASETS)] == pytest.approx(
        by_hand
    )
    assert math.isnan(tables[("tiny", "points-5")].loc["zero_shot", ("IoU", MEAN_OVER_DATASETS)])
    per_dataset = summary[summary["level"] == "dataset"].set_index(["prompt_mode", "dataset"])
    for (mode, dataset), value in per_dataset["iou"].items():
        in_report = report.get(("tiny", mode, "zero_shot", dataset), NAN)
        if math.isnan(value):
            assert math.isnan(in_report) and reference[(mode, dataset)] is None
        else:
            assert in_report == pytest.approx(value)
            assert reference[(mode, dataset)] == pytest.approx(value, abs=1e-6)
