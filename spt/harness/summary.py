"""``summary.csv`` and ``summary.md`` of one evaluation, aggregated by :mod:`spt.harness.aggregate`
(the rule the report and the regression check use too)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from spt.harness.aggregate import group_means, mean_over_datasets
from spt.harness.metrics import METRIC_NAMES
from spt.harness.records import write_output


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Summary rows: per dataset, per dataset x category, and the unweighted mean over datasets.

    Every row is one (method, backbone, prompt_mode, stage) with ``level`` (``dataset``,
    ``category`` or ``mean_over_datasets``), ``dataset``, ``category``, the metric means,
    ``n_ok``, ``n_no_prompt``, and the mean decode and encode seconds. The mean over datasets
    is NaN for a run that has no scorable image on one of the datasets it evaluated
    (:mod:`spt.harness.aggregate`).
    """
    run = ["method", "backbone", "seed", "prompt_mode", "stage"]
    per_dataset = group_means(records, ["dataset", *run])
    per_category = group_means(records, ["dataset", "category", *run])
    overall = mean_over_datasets(per_dataset, within=["backbone", "seed", "prompt_mode"])
    parts = [
        per_dataset.reset_index().assign(level="dataset", category=""),
        per_category.reset_index().assign(level="category"),
        overall.reset_index().assign(level="mean_over_datasets", dataset="", category=""),
    ]
    summary = pd.concat(parts, ignore_index=True)
    timing = records.groupby(run)[["seconds", "encode_seconds"]].mean()
    summary = summary.join(timing.rename(columns=lambda c: f"mean_{c}"), on=run)
    order = ["level", "dataset", "category", *run, *METRIC_NAMES, "n_ok", "n_no_prompt"]
    order += ["n_datasets", "mean_seconds", "mean_encode_seconds"]
    return summary[[c for c in order if c in summary.columns]]


def summary_markdown(summary: pd.DataFrame) -> str:
    """A markdown report: the mean over datasets, then each dataset (categories in the CSV)."""
    lines = ["# Evaluation summary", ""]
    shown = ["prompt_mode", "stage", *METRIC_NAMES, "n_ok", "n_no_prompt"]
    for title, rows in (
        ("Unweighted mean over datasets", summary[summary["level"] == "mean_over_datasets"]),
        ("Per dataset", summary[summary["level"] == "dataset"]),
    ):
        columns = (["dataset"] if title == "Per dataset" else []) + shown
        lines += [f"## {title}", "", _markdown_table(rows[columns]), ""]
    lines.append("Per-category means are in summary.csv (level = category).")
    return "\n".join(lines) + "\n"


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4f}"
        return str(value)

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_summary(
    records: pd.DataFrame,
    folder: str | Path,
    numerics_line: str | None = None,
    weights_line: str | None = None,
) -> pd.DataFrame:
    """Write ``summary.csv`` and ``summary.md`` into ``folder`` atomically; return the table.
    ``numerics_line`` (:func:`spt.numerics.summary_line`) and ``weights_line`` (which
    checkpoint, :func:`spt.harness.evaluate.weights_line`) head summary.md."""
    folder = Path(folder)
    summary = summarise(records)
    write_output(folder / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
    text = summary_markdown(summary)
    if weights_line:
        text = f"{weights_line}.\n\n{text}"
    if numerics_line:
        text = f"Numbers {numerics_line}.\n\n{text}"
    write_output(folder / "summary.md", lambda tmp: Path(tmp).write_text(text))
    return summary


def headline_line(records: pd.DataFrame, metric: str = "iou") -> str:
    """One line with the unweighted mean over datasets of ``metric`` per prompt mode, of each
    stage: what an evaluation prints when it ends."""
    per_dataset = group_means(records, ["stage", "prompt_mode", "dataset"], [metric])
    means = mean_over_datasets(per_dataset, within=["stage", "prompt_mode"], metrics=[metric])
    n_datasets = records["dataset"].nunique()
    parts = []
    for stage, by_mode in means[metric].groupby(level="stage", sort=True):
        shown = ", ".join(
            f"{mode} {value:.3f}" if math.isfinite(value) else f"{mode} -"
            for (_, mode), value in by_mode.items()
        )
        parts.append(f"{stage}: {shown}")
    return f"mean {metric.upper()} over {n_datasets} dataset(s): " + "; ".join(parts)
