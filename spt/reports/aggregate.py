"""Mean metric per method and dataset, and its spread over seeds.

A dataset's score for one seed and the unweighted mean over datasets follow
:mod:`spt.harness.aggregate` (the rule summary.md and the regression check use): the mean over
the scorable images (status ok, finite metric), ``no_prompt`` images left out and counted
separately by the tables, and a mean over datasets only for a run scored on every dataset of its
backbone and prompt mode. Over several seeds the score is the mean of the per-seed scores, so
every seed weighs the same even when the seeds scored different numbers of images.

Methods appear under their row label: ``spt (draft)`` and ``spt (final)`` for a method
with several stages, the bare name otherwise.
"""

from __future__ import annotations

import pandas as pd

from spt.harness import aggregate
from spt.harness.aggregate import MEAN_OVER_DATASETS
from spt.reports.records import check_metric, check_records, with_method_labels

GROUP = ["backbone", "prompt_mode", "label", "dataset"]
__all__ = [
    "GROUP",
    "MEAN_OVER_DATASETS",
    "dataset_means",
    "per_seed_mean_over_datasets",
    "per_seed_means",
    "seed_spread",
]


def per_seed_means(records: pd.DataFrame, metric: str = "iou") -> pd.Series:
    """Mean ``metric`` indexed by (backbone, prompt_mode, label, dataset, seed); groups with no
    scorable record are left out."""
    check_records(records)
    check_metric(metric)
    means = aggregate.group_means(with_method_labels(records), [*GROUP, "seed"], [metric])
    return means[metric].dropna()


def dataset_means(records: pd.DataFrame, metric: str = "iou") -> pd.Series:
    """Mean over seeds of the per-seed means, indexed by (backbone, prompt_mode, label, dataset)."""
    return per_seed_means(records, metric).groupby(level=GROUP, sort=True).mean()


def _mean_over_datasets(by_seed: pd.Series) -> pd.Series:
    """Per-seed unweighted mean over the datasets of each (backbone, prompt_mode); a seed
    missing one of the datasets any method has there gets no mean."""
    metric = by_seed.name or "value"
    frame = by_seed.rename(metric).to_frame()
    means = aggregate.mean_over_datasets(frame, within=GROUP[:2], metrics=[metric])[metric]
    means = pd.concat({MEAN_OVER_DATASETS: means.dropna()}, names=["dataset"])
    return means.reorder_levels([*GROUP, "seed"])


def per_seed_mean_over_datasets(records: pd.DataFrame, metric: str = "iou") -> pd.Series:
    """Each seed's unweighted mean over datasets, indexed by (backbone, prompt_mode, label,
    dataset = ``'mean'``, seed): the values whose spread :func:`seed_spread` summarises."""
    by_seed = per_seed_means(records, metric)
    if by_seed.empty:
        return by_seed
    return _mean_over_datasets(by_seed).rename(metric)


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
    over_datasets = _mean_over_datasets(by_seed)
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
