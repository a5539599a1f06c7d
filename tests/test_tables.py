"""Metric tables on hand-made records, and their markdown / LaTeX / CSV / JSON renderings."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from spt.harness.records import RECORD_COLUMNS
from spt.reports.stats import compare
from spt.reports.tables import (
    INVALID_COLUMN,
    NO_PROMPT_COLUMN,
    PARAMS_COLUMN,
    defect_type_markdown,
    defect_type_table,
    metric_tables,
    significance_json,
    significance_markdown,
    to_csv,
    to_latex,
    to_markdown,
    write_metric_tables,
)

# (method, stage, dataset) -> per-image (iou, biou); one seed, backbone vit_b, box prompts.
HAND_VALUES = {
    ("spt", "draft", "mvtec_ad"): [(0.5, 0.25)],
    ("spt", "draft", "visa"): [(0.2, 0.1), (0.4, 0.3), (0.9, 0.7)],
    ("spt", "final", "mvtec_ad"): [(0.8, 0.6)],
    ("spt", "final", "visa"): [(0.3, 0.2), (0.5, 0.4), (1.0, 0.9)],
    ("sam", "final", "mvtec_ad"): [(0.6, 0.5)],
    ("sam", "final", "visa"): [(0.1, 0.05), (0.2, 0.15), (0.3, 0.2)],
    ("lora", "final", "mvtec_ad"): [(0.7, 0.65)],  # lora never ran on visa
}
PARAMS = {"spt": 1234, "sam": 0}  # lora deliberately missing
LABELS = {("spt", "draft"): "spt (draft)", ("spt", "final"): "spt (final)"}


def record(
    method,
    stage,
    dataset,
    index,
    iou,
    biou,
    *,
    seed=0,
    status="ok",
    backbone="vit_b",
    prompt_mode="box",
) -> dict:
    return {
        "method": method,
        "backbone": backbone,
        "seed": seed,
        "dataset": dataset,
        "category": "cat",
        "defect_type": "crack",
        "image_id": f"{dataset}/{index}",
        "prompt_mode": prompt_mode,
        "stage": stage,
        "iou": iou,
        "biou": biou,
        "dice": iou,
        "seconds": 0.02,
        "encode_seconds": 0.05,
        "status": status,
        "reason": "",
    }


def hand_records() -> pd.DataFrame:
    rows = []
    for (method, stage, dataset), values in HAND_VALUES.items():
        for index, (iou, biou) in enumerate(values):
            rows.append(record(method, stage, dataset, index, iou, biou))
    rows.append(record("sam", "final", "visa", 9, np.nan, np.nan, status="no_prompt"))
    rows.append(record("lora", "final", "mvtec_ad", 9, np.nan, 0.3))  # ok but IoU NaN
    # a second backbone, to check one table per (backbone, prompt_mode)
    rows.append(record("sam", "final", "visa", 0, 0.4, 0.3, backbone="vit_h"))
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def expected_cell(method, stage, dataset, metric_index) -> float:
    values = HAND_VALUES.get((method, stage, dataset))
    if not values:
        return float("nan")
    return sum(v[metric_index] for v in values) / len(values)


@pytest.fixture()
def vit_b_table() -> pd.DataFrame:
    return metric_tables(hand_records(), PARAMS)[("vit_b", "box")]


def test_one_table_per_backbone_and_prompt_mode():
    tables = metric_tables(hand_records(), PARAMS)
    assert set(tables) == {("vit_b", "box"), ("vit_h", "box")}
    assert list(tables[("vit_h", "box")].index) == ["sam"]
    assert tables[("vit_h", "box")].loc["sam", ("IoU", "visa")] == pytest.approx(0.4)


def test_cells_equal_hand_means(vit_b_table):
    assert list(vit_b_table.index) == ["lora", "sam", "spt (draft)", "spt (final)"]
    for method, stage in [("spt", "draft"), ("spt", "final"), ("sam", "final"), ("lora", "final")]:
        label = LABELS.get((method, stage), method)
        for title, metric_index in (("IoU", 0), ("BIoU", 1)):
            per_dataset = [
                expected_cell(method, stage, d, metric_index) for d in ("mvtec_ad", "visa")
            ]
            for dataset, value in zip(("mvtec_ad", "visa"), per_dataset, strict=True):
                got = vit_b_table.loc[label, (title, dataset)]
                assert got == pytest.approx(value, nan_ok=True), (label, title, dataset)
            unweighted = sum(per_dataset) / 2  # NaN when a dataset is missing
            got_mean = vit_b_table.loc[label, (title, "mean")]
            assert got_mean == pytest.approx(unweighted, nan_ok=True), (label, title)


def test_mean_over_datasets_is_unweighted(vit_b_table):
    values = HAND_VALUES[("spt", "final", "mvtec_ad")] + HAND_VALUES[("spt", "final", "visa")]
    image_weighted = sum(v[0] for v in values) / len(values)  # 2.6 / 4 = 0.65
    unweighted = (0.8 + (0.3 + 0.5 + 1.0) / 3) / 2  # 0.7
    got = vit_b_table.loc["spt (final)", ("IoU", "mean")]
    assert got == pytest.approx(unweighted)
    assert got != pytest.approx(image_weighted)


def test_params_and_dropped_counts(vit_b_table):
    params = vit_b_table[PARAMS_COLUMN]
    assert params["spt (draft)"] == 1234 and params["spt (final)"] == 1234
    assert params["sam"] == 0
    assert pd.isna(params["lora"])
    assert vit_b_table.loc["sam", NO_PROMPT_COLUMN] == 1
    assert vit_b_table.loc["lora", INVALID_COLUMN] == 1
    assert vit_b_table[NO_PROMPT_COLUMN].sum() == 1
    assert vit_b_table[INVALID_COLUMN].sum() == 1


def test_seeds_weigh_equally():
    rows = [record("sam", "final", "visa", i, v, v) for i, v in enumerate([0.2, 0.4])]
    rows += [record("sam", "final", "visa", 0, 0.8, 0.8, seed=1)]
    table = metric_tables(pd.DataFrame(rows, columns=RECORD_COLUMNS), {})[("vit_b", "box")]
    per_seed = ((0.2 + 0.4) / 2 + 0.8) / 2  # 0.55, not the pooled 1.4 / 3
    assert table.loc["sam", ("IoU", "visa")] == pytest.approx(per_seed)


def test_method_order_puts_named_rows_first():
    tables = metric_tables(hand_records(), PARAMS, method_order=["spt (final)", "sam"])
    assert list(tables[("vit_b", "box")].index) == ["spt (final)", "sam", "lora", "spt (draft)"]


def parse_number(text: str) -> float:
    return float("nan") if text in ("–", "--") else float(text)


def test_markdown_renders_and_parses_back(vit_b_table):
    text = to_markdown(vit_b_table)
    lines = text.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "method"
    assert header[1:] == [": ".join(c) for c in vit_b_table.columns]
    for line, (label, row) in zip(lines[2:], vit_b_table.iterrows(), strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == label
        for column, cell in zip(vit_b_table.columns, cells[1:], strict=True):
            bold = cell.startswith("**")
            value = parse_number(cell.strip("*"))
            expected = float(row[column]) if not pd.isna(row[column]) else float("nan")
            assert value == pytest.approx(expected, abs=5e-4, nan_ok=True)
            is_best = column[0] in ("IoU", "BIoU") and expected == vit_b_table[column].max()
            assert bold == is_best, (label, column)


def test_latex_booktabs_renders_and_parses_back(vit_b_table):
    text = to_latex(vit_b_table, caption="IoU on mvtec_ad & visa", label="tab:iou")
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-4}"):
        assert command in text
    assert r"\multicolumn{3}{c}{IoU}" in text
    assert r"\caption{IoU on mvtec\_ad \& visa}" in text
    assert "mvtec_ad" not in text.replace(r"mvtec\_ad", "")  # every underscore escaped
    body = text.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    assert len(body) == len(vit_b_table)
    for line, (label, row) in zip(body, vit_b_table.iterrows(), strict=True):
        cells = [c.strip() for c in line.removesuffix(r"\\").split(" & ")]
        assert cells[0] == label
        for column, cell in zip(vit_b_table.columns, cells[1:], strict=True):
            match = re.fullmatch(r"\\textbf\{(.*)\}", cell)
            value = parse_number(match.group(1) if match else cell)
            expected = float(row[column]) if not pd.isna(row[column]) else float("nan")
            assert value == pytest.approx(expected, abs=5e-4, nan_ok=True)
            is_best = column[0] in ("IoU", "BIoU") and expected == vit_b_table[column].max()
            assert bool(match) == is_best, (label, column)


def test_best_bolds_ties_and_skips_missing():
    rows = [record(m, "final", "visa", 0, 0.5, 0.5) for m in ("a", "b")]
    rows.append(record("c", "final", "visa", 0, 0.1, 0.1))
    table = metric_tables(pd.DataFrame(rows, columns=RECORD_COLUMNS), {})[("vit_b", "box")]
    text = to_markdown(table)
    # two tied rows x (IoU visa, IoU mean, BIoU visa, BIoU mean)
    assert text.count("**0.500**") == 8
    assert "**0.100**" not in text
    plain = to_latex(table, bold_best=False)
    assert r"\textbf" not in plain


def test_csv_round_trip(vit_b_table, tmp_path):
    path = tmp_path / "table.csv"
    text = to_csv(vit_b_table, path)
    assert path.read_text() == text
    back = pd.read_csv(io.StringIO(text), header=[0, 1], index_col=0)
    assert list(back.index) == list(vit_b_table.index)
    assert list(back.columns) == list(vit_b_table.columns)
    np.testing.assert_allclose(
        back.to_numpy(dtype=float), vit_b_table.astype(float).to_numpy(), rtol=0, atol=0
    )


def test_records_without_scores_give_empty_cells_not_errors():
    rows = [
        record(m, "final", "visa", i, np.nan, np.nan, status="no_prompt")
        for m in ("spt", "sam")
        for i in range(3)
    ]
    records = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    table = metric_tables(records, {"sam": 0})[("vit_b", "box")]
    assert table[("IoU", "visa")].isna().all() and table[("BIoU", "mean")].isna().all()
    assert list(table[NO_PROMPT_COLUMN]) == [3, 3]
    assert "| sam | – | – | – | – | 0 | 3 | 0 |" in to_markdown(table)
    assert r"sam & -- & -- & -- & -- & 0 & 3 & 0 \\" in to_latex(table)
    assert metric_tables(records.iloc[0:0], {}) == {}


def test_stage_without_scores_keeps_its_label():
    rows = [record("spt", "final", "visa", i, 0.5, 0.5) for i in range(2)]
    rows += [record("spt", "draft", "visa", i, 0.4, np.nan) for i in range(2)]  # BIoU NaN
    table = metric_tables(pd.DataFrame(rows, columns=RECORD_COLUMNS), {})[("vit_b", "box")]
    assert list(table.index) == ["spt (draft)", "spt (final)"]
    assert np.isnan(table.loc["spt (draft)", ("IoU", "visa")])  # same images as BIoU: none
    assert table.loc["spt (draft)", INVALID_COLUMN] == 2


def test_write_metric_tables(tmp_path):
    tables = metric_tables(hand_records(), PARAMS)
    written = write_metric_tables(tables, tmp_path / "reports")
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"metrics_{b}_box.{ext}" for b in ("vit_b", "vit_h") for ext in ("md", "tex", "csv")
    )
    assert all(p.read_text() for p in written)


def significance_table() -> pd.DataFrame:
    rows = [record("spt", "final", "visa", i, 0.5 + i / 40, 0.5) for i in range(10)]
    rows += [record("sam", "final", "visa", i, 0.4 + i / 50, 0.5) for i in range(10)]
    rows += [record("lora", "final", "visa", i, 0.45, 0.5) for i in range(2)]  # too few
    return compare(pd.DataFrame(rows, columns=RECORD_COLUMNS), n_boot=200)


def test_significance_json_is_strict_json_with_nulls():
    table = significance_table()
    text = significance_json(table)

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    document = json.loads(text, parse_constant=reject)
    assert document["settings"]["alpha"] == 0.05
    by_baseline = {c["baseline"]: c for c in document["comparisons"]}
    assert by_baseline["lora"]["p_value"] is None
    assert by_baseline["lora"]["verdict"] == "not tested"
    assert by_baseline["sam"]["verdict"] == "better"
    assert by_baseline["sam"]["n_pairs"] == 10
    assert by_baseline["sam"]["p_value"] == pytest.approx(table.loc[1, "p_value"])


def test_significance_markdown_lists_every_comparison():
    table = significance_table()
    text = significance_markdown(table)
    assert "## Backbone vit_b, prompt mode box" in text
    assert "Verdicts: 1 better, 0 no significant difference, 0 worse, 1 not tested." in text
    rows = [line for line in text.splitlines() if line.startswith("| visa |")]
    assert len(rows) == 2
    sam_row = next(r for r in rows if "| sam |" in r)
    assert "| better |" in sam_row and f"{table.loc[1, 'mean_diff']:.3f} [" in sam_row
    assert "8 unpaired" in next(r for r in rows if "| lora |" in r)
    # a frame that lost its attrs still renders
    bare = table.copy()
    bare.attrs = {}
    assert "| visa | sam |" in significance_markdown(bare)


def test_defect_type_table_against_hand_means():
    """Two seeds, two types on one dataset, one type on another (left out): each cell is the
    mean over the type's images per seed, then over seeds, computed here by hand."""
    rows = []
    values = {  # (method, seed, type) -> IoUs of that type's images
        ("sam", 0, "crack"): [0.2, 0.4],
        ("sam", 1, "crack"): [0.6, 0.6],
        ("sam", 0, "melt+scratch"): [0.9],
        ("sam", 1, "melt+scratch"): [0.5],
        ("spt", 0, "crack"): [0.5, 0.7],
        ("spt", 1, "crack"): [0.7, 0.7],
    }
    for (method, seed, defect_type), ious in values.items():
        for index, iou in enumerate(ious):
            row = record(method, "final", "visa", f"{defect_type}{index}", iou, iou, seed=seed)
            rows.append(row | {"defect_type": defect_type})
    rows.append(record("sam", "final", "visa", "x", 0.0, 0.0, prompt_mode="points-1"))
    rows.append(record("sam", "final", "visa", "y", np.nan, np.nan, status="no_prompt"))
    rows.append(record("sam", "final", "mtd", 0, 0.3, 0.3))  # one type only: no rows
    table = defect_type_table(
        pd.DataFrame(rows, columns=RECORD_COLUMNS), "box", method_order=["spt", "sam"]
    )
    assert list(table.columns) == ["images", "spt", "sam"]
    assert list(table.index) == [("visa", "crack"), ("visa", "melt+scratch")]
    assert table.loc[("visa", "crack"), "images"] == 2
    assert table.loc[("visa", "crack"), "sam"] == pytest.approx(((0.2 + 0.4) / 2 + 0.6) / 2)
    assert table.loc[("visa", "crack"), "spt"] == pytest.approx((0.6 + 0.7) / 2)
    assert table.loc[("visa", "melt+scratch"), "sam"] == pytest.approx(0.7)
    assert np.isnan(table.loc[("visa", "melt+scratch"), "spt"])
    text = defect_type_markdown(table, "title")
    assert "| visa | crack | 2 | **0.650** | 0.450 |" in text
    assert "| visa | melt+scratch | 1 | – | **0.700** |" in text
