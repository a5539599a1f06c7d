"""From per-image records to means: the one aggregation that summary.md, the report's tables and
the regression check all use, so they agree on every number, the headline included.

The rule, in two steps:

1. **A dataset's mean** of a metric is the mean over its *scorable* records: status ``ok`` and a
   finite value of that metric. ``no_prompt`` records are counted (``n_no_prompt``), never
   scored as zero. A group with no scorable record has no mean (NaN).
2. **The mean over datasets** (the official headline) is the unweighted mean of the dataset
   means: each dataset counts once, whatever its number of images. It is NaN unless the row has
   a mean on *every* dataset of its comparison group (``within``: e.g. all rows of one backbone
   and prompt mode): a headline over fewer datasets would not be comparable with the others, so
   it is left out rather than shown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from spt.harness.metrics import METRIC_NAMES
from spt.harness.records import STATUS_NO_PROMPT, STATUS_OK

#: The ``dataset`` value of rows that hold the mean over datasets.
MEAN_OVER_DATASETS = "mean"


def scorable(records: pd.DataFrame, metric: str) -> pd.Series:
    """True where a record has status ok and a finite value of ``metric``."""
    values = pd.to_numeric(records[metric], errors="coerce").to_numpy(dtype=float)
    return (records["status"] == STATUS_OK) & np.isfinite(values)


def group_means(
    records: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str] = METRIC_NAMES
) -> pd.DataFrame:
    """Step 1 per group of ``keys``: each metric's mean over the group's records scorable for
    it, plus ``n_ok`` and ``n_no_prompt`` (record counts). Indexed by ``keys``, sorted; every
    group that has records gets a row, NaN where nothing was scorable."""
    by = [records[k] for k in keys]
    columns = {}
    for metric in metrics:
        values = pd.to_numeric(records[metric], errors="coerce").astype(float)
        columns[metric] = (
            values.where(scorable(records, metric)).groupby(by, sort=True, dropna=False).mean()
        )
    status = records["status"]
    counts = pd.DataFrame(
        {"n_ok": status == STATUS_OK, "n_no_prompt": status == STATUS_NO_PROMPT},
        index=records.index,
    )
    columns["n_ok"] = counts["n_ok"].groupby(by, sort=True, dropna=False).sum()
    columns["n_no_prompt"] = counts["n_no_prompt"].groupby(by, sort=True, dropna=False).sum()
    frame = pd.DataFrame(columns)
    frame.index.names = list(keys)
    return frame


def mean_over_datasets(
    per_dataset: pd.DataFrame,
    within: Sequence[str] = (),
    metrics: Sequence[str] = METRIC_NAMES,
) -> pd.DataFrame:
    """Step 2: ``per_dataset`` (indexed by some keys and ``dataset``, e.g. :func:`group_means`)
    -> one row per remaining key combination with the unweighted mean of each metric over
    datasets, NaN unless the row has a finite mean on every dataset that occurs in its
    ``within`` group (all of ``per_dataset`` when ``within`` is empty). Count columns
    (``n``, ``n_*``) are summed; ``n_datasets`` is the number of datasets the row has."""
    frame = per_dataset.reset_index()
    rest = [name for name in per_dataset.index.names if name != "dataset"]
    if within:
        expected = frame.groupby(list(within), sort=True, dropna=False)["dataset"].transform(
            "nunique"
        )
    else:
        expected = pd.Series(frame["dataset"].nunique(), index=frame.index)
    groups = frame.assign(_expected=expected).groupby(rest, sort=True, dropna=False)
    result = pd.DataFrame(index=groups.size().index)
    needed = groups["_expected"].max()
    for metric in metrics:
        complete = groups[metric].count() == needed
        result[metric] = groups[metric].mean().where(complete)
    for count in [c for c in frame.columns if c == "n" or c.startswith("n_")]:
        result[count] = groups[count].sum()
    result["n_datasets"] = groups["dataset"].nunique()
    return result
