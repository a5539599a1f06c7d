"""Mean metric per method and dataset, and its spread over seeds.

A dataset's score for one seed is the mean over its scorable images (status ok, finite
metric); ``no_prompt`` images are left out and counted separately by the tables. Over
several seeds the score is the mean of the per-seed scores, so every seed weighs the same
even when the seeds scored different numbers of images.

Methods appear under their row label: ``spt (draft)`` and ``spt (final)`` for a method
with several stages, the bare name otherwise.
"""

from __future__ import annotations

import pandas as pd

from spt.reports.records import check_metric, check_records, scorable, with_method_labels

GROUP = ["backbone", "prompt_mode", "label", "dataset"]
MEAN_OVER_DATASETS = "mean"


def per_seed_means(records: pd.DataFrame, metric: str = "iou") -> pd.Series:
    """Mean ``metric`` indexed by (backbone, prompt_mode, label, dataset, seed)."""
    check_records(records)
    check_metric(metric)
    labelled = with_method_labels(records)
    usable = labelled[scorable(labelled, metric)]
    values = pd.to_numeric(usable[metric], errors="coerce").astype(float)
    return values.groupby([usable[c] for c in [*GROUP, "seed"]], sort=True, dropna=False).mean()


def dataset_means(records: pd.DataFrame, metric: str = "iou") -> pd.Series:
    """Mean over seeds of the per-seed means, indexed by (backbone, prompt_mode, label, dataset)."""
    return per_seed_means(records, metric).groupby(level=GROUP, sort=True).mean()


def _mean_over_datasets(by_seed: pd.Series) -> pd.Series:
    """Per-seed unweighted mean over the datasets of one (backbone, prompt_mode).

    The datasets are those any method has there; a seed missing one of them gets no mean.
    """
    grid = by_seed.unstack("dataset")  # rows (backbone, prompt_mode, label, seed)
    means = grid.mean(axis=1, skipna=False).dropna()
    means = pd.concat({MEAN_OVER_DATASETS: means}, names=["dataset"])
    return means.reorder_levels([*GROUP, "seed"])


def seed_spread(records: pd.DataFrame, metric: str = "iou") -> pd.DataFrame:
    """Spread over seeds of each method's per-dataset mean ``metric``.

    One row per (backbone, prompt_mode, method, dataset) with n_seeds, mean, std (ddof=1,
    NaN for a single seed), min and max. Rows with dataset ``'mean'`` hold the spread of the
    unweighted mean over datasets; a seed that lacks one of the datasets seen under its
    backbone and prompt mode has no such mean and is left out of that row (n_seeds says how many remain).
    """
    columns = ["backbone", "prompt_mode", "method", "dataset", "n_seeds", "mean", "std"]
    columns += ["min", "max"]
    by_seed = per_seed_means(records, metric)
    if by_seed.empty:
        return pd.DataFrame(columns=columns)
    over_datasets = pd.concat(
        [_mean_over_datasets(part) for _, part in by_seed.groupby(level=GROUP[:2], sort=True)]
    )
    everything = pd.concat([by_seed, over_datasets])
    spread = everything.groupby(level=GROUP, sort=True).agg(["count", "mean", "std", "min", "max"])
    spread = spread.rename(columns={"count": "n_seeds"}).reset_index()
    spread = spread.rename(columns={"label": "method"})
    # the mean over datasets after the datasets it summarises
    spread = spread.sort_values(
        ["backbone", "prompt_mode", "method", "dataset"],
        key=lambda col: col.eq(MEAN_OVER_DATASETS) if col.name == "dataset" else col,
        kind="stable",
    )
    return spread[columns].reset_index(drop=True)
