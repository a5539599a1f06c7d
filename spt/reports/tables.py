"""Paper tables: per backbone and prompt mode, methods as rows and datasets as columns.

Each table has one column group per metric (``IoU``, ``BIoU``): the dataset means
(``spt.reports.aggregate``: mean over scorable images, then over seeds) and ``mean``, the
unweighted mean over the datasets, so a large dataset does not outweigh a small one. A
method missing one of the table's datasets gets no ``mean`` rather than a mean over a
different set of datasets. Then ``params / trainable`` (from the caller's mapping; missing
methods stay empty) and ``records / no prompt`` and ``records / invalid``: records the means
leave out because the prompt mode produced no prompt, or because the status is ok but one
of the table's metrics is not finite (or the status is unknown); such a record is left out
of every metric, so all columns of a row average the same images. The counts run over all
datasets and seeds of the row.

SPT's draft and final stages are two rows, ``spt (draft)`` and ``spt (final)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spt.artifacts import write_text_atomically
from spt.harness.aggregate import scorable
from spt.harness.records import STATUS_NO_PROMPT
from spt.reports import render
from spt.reports.aggregate import MEAN_OVER_DATASETS, dataset_means
from spt.reports.records import check_metric, check_records, with_method_labels
from spt.reports.significance_report import significance_json, significance_markdown

__all__ = [
    "defect_type_table",
    "defect_type_markdown",
    "metric_tables",
    "significance_json",
    "significance_markdown",
    "to_csv",
    "to_latex",
    "to_markdown",
    "write_metric_tables",
]

METRIC_TITLES = {"iou": "IoU", "biou": "BIoU", "dice": "Dice"}
PARAMS_COLUMN = ("params", "trainable")
NO_PROMPT_COLUMN = ("records", "no prompt")
INVALID_COLUMN = ("records", "invalid")


def _row_order(labels, method_order: Sequence[str] | None) -> list[str]:
    """Labels in ``method_order`` first (as given), the rest alphabetically."""
    present = set(labels)
    first = [m for m in (method_order or []) if m in present]
    return first + sorted(present - set(first), key=str)


def _means_grid(means: pd.Series, backbone, prompt_mode, labels, datasets) -> pd.DataFrame:
    """labels x datasets of one (backbone, prompt_mode); absent cells are NaN."""
    here = means[
        (means.index.get_level_values("backbone") == backbone)
        & (means.index.get_level_values("prompt_mode") == prompt_mode)
    ]
    grid = here.droplevel(["backbone", "prompt_mode"]).unstack("dataset")
    return grid.reindex(index=labels, columns=datasets).astype(float)


def metric_tables(
    records: pd.DataFrame,
    param_counts: Mapping[str, int],
    metrics: Sequence[str] = ("iou", "biou"),
    method_order: Sequence[str] | None = None,
) -> dict[tuple[str, str], pd.DataFrame]:
    """One table per (backbone, prompt_mode): rows are method labels, columns a two-level
    index (metric title or ``params`` / ``records``, dataset or count name)."""
    check_records(records)
    for metric in metrics:
        check_metric(metric)
    labelled = with_method_labels(records)
    all_scorable = np.logical_and.reduce([scorable(labelled, m) for m in metrics])
    # Every metric of a table averages the same images. Masking values rather than dropping
    # rows keeps the row labels: a stage with no scorable record still names its row.
    masked = records.copy()
    masked.loc[~all_scorable, list(metrics)] = np.nan
    means = {metric: dataset_means(masked, metric) for metric in metrics}
    no_prompt = labelled["status"] == STATUS_NO_PROMPT
    labelled = labelled.assign(no_prompt=no_prompt, invalid=~no_prompt & ~all_scorable)

    tables = {}
    for (backbone, prompt_mode), part in labelled.groupby(
        ["backbone", "prompt_mode"], sort=True, dropna=False
    ):
        labels = _row_order(part["label"].unique(), method_order)
        datasets = sorted(part["dataset"].unique(), key=str)
        columns = {}
        for metric in metrics:
            grid = _means_grid(means[metric], backbone, prompt_mode, labels, datasets)
            title = METRIC_TITLES[metric]
            for dataset in datasets:
                columns[(title, dataset)] = grid[dataset].to_numpy()
            columns[(title, MEAN_OVER_DATASETS)] = grid.mean(axis=1, skipna=False).to_numpy()
        method_of = part.groupby("label")["method"].first()
        columns[PARAMS_COLUMN] = pd.array(
            [param_counts.get(method_of[label]) for label in labels], dtype="Int64"
        )
        counts = part.groupby("label")[["no_prompt", "invalid"]].sum().reindex(labels)
        columns[NO_PROMPT_COLUMN] = counts["no_prompt"].to_numpy(dtype=int)
        columns[INVALID_COLUMN] = counts["invalid"].to_numpy(dtype=int)
        table = pd.DataFrame(columns, index=pd.Index(labels, name="method"))
        table.columns = pd.MultiIndex.from_tuples(table.columns)
        tables[(backbone, prompt_mode)] = table
    return tables


def best_cells(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """True at the highest value of every metric column, ties as displayed included."""
    best = pd.DataFrame(False, index=table.index, columns=table.columns)
    for column in table.columns:
        if column[0] not in METRIC_TITLES.values():
            continue
        shown = table[column].astype(float).round(digits)
        if shown.notna().any():
            best[column] = shown.eq(shown.max()).to_numpy()
    return best


def to_markdown(table: pd.DataFrame, digits: int = 3, bold_best: bool = True) -> str:
    return render.markdown(table, digits, best_cells(table, digits) if bold_best else None)


def to_latex(
    table: pd.DataFrame,
    digits: int = 3,
    bold_best: bool = True,
    caption: str | None = None,
    label: str | None = None,
) -> str:
    bold = best_cells(table, digits) if bold_best else None
    return render.latex(table, digits, bold, caption=caption, label=label)


def to_csv(table: pd.DataFrame, path: str | Path | None = None) -> str:
    """CSV text of ``table``, also written to ``path`` when given."""
    text = render.csv(table)
    if path is not None:
        write_text_atomically(Path(path), text)
    return text


def write_metric_tables(
    tables: Mapping[tuple[str, str], pd.DataFrame], out_dir: str | Path, stem: str = "metrics"
) -> list[Path]:
    """Write every table as ``<stem>_<backbone>_<prompt_mode>.{md,tex,csv}``; returns paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (backbone, prompt_mode), table in tables.items():
        base = f"{stem}_{backbone}_{prompt_mode}"
        titles = [
            t
            for t in dict.fromkeys(table.columns.get_level_values(0))
            if t in METRIC_TITLES.values()
        ]
        caption = f"Mean {', '.join(titles)}; backbone {backbone}, prompt mode {prompt_mode}."
        for suffix, text in (
            (".md", to_markdown(table)),
            (".tex", to_latex(table, caption=caption)),
            (".csv", to_csv(table)),
        ):
            path = out_dir / (base + suffix)  # not with_suffix: names may hold dots
            write_text_atomically(path, text)
            written.append(path)
    return written


def defect_type_table(
    records: pd.DataFrame,
    prompt_mode: str,
    metric: str = "iou",
    method_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean ``metric`` per (dataset, defect type) and method, for the datasets of ``records``
    that have more than one defect type: the mean over the type's scorable images, then over
    seeds, as the dataset means are. Column ``images``: the type's distinct images. Rows sorted
    by dataset and type; method columns in ``method_order`` (then by name). Empty when no
    dataset has several types."""
    check_metric(metric)
    part = with_method_labels(records[records["prompt_mode"] == prompt_mode])
    part = part[scorable(part, metric).to_numpy()]
    types = part.groupby("dataset")["defect_type"].nunique()
    part = part[part["dataset"].isin(types[types > 1].index)]
    if part.empty:
        return pd.DataFrame()
    keys = ["dataset", "defect_type"]
    per_seed = part.groupby([*keys, "label", "seed"])[metric].mean()
    means = per_seed.groupby(level=[0, 1, 2]).mean().unstack("label")
    means = means[_row_order(means.columns, method_order)]
    means.insert(0, "images", part.groupby(keys)["image_id"].nunique())
    return means.sort_index()


def defect_type_markdown(table: pd.DataFrame, title: str, digits: int = 3) -> str:
    """The table of :func:`defect_type_table` as markdown, the best method per row in bold."""
    methods = [c for c in table.columns if c != "images"]
    lines = [
        f"# {title}",
        "",
        "| dataset | defect type | images | " + " | ".join(map(str, methods)) + " |",
        "|---|---|---:|" + "---:|" * len(methods),
    ]
    for (dataset, defect_type), row in table.iterrows():
        values = row[methods].astype(float)
        best = values.max() if values.notna().any() else np.nan
        cells = []
        for value in values:
            text = render.format_cell(value, digits)
            cells.append(f"**{text}**" if np.isfinite(value) and value == best else text)
        lines.append(
            f"| {dataset} | {defect_type} | {int(row['images'])} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"
