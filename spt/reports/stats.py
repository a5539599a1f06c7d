"""The significance table: the reference method (SPT) against every baseline.

One comparison per (backbone, prompt mode, dataset, baseline). Records pair on
(dataset, image_id, prompt_mode, seed) and are averaged per image over seeds (see
``spt.reports.pairing``); the paired statistics are those of ``spt.reports.paired_stats``.

The Holm family is every tested comparison in the returned table, across backbones, prompt
modes, datasets and baselines, unless ``family_by`` names columns to split it by. A
comparison with fewer than ``min_pairs`` paired images is not tested (p-values NaN, verdict
'not tested') and stays out of the family. The default of 6 is the smallest sample on which
an exact two-sided signed-rank test can reach p < 0.05 (2 / 2**6 = 0.031).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from spt.errors import SuiteError
from spt.reports.aggregate import seed_spread
from spt.reports.paired_stats import (
    bootstrap_mean_ci,
    cohens_dz,
    holm_adjust,
    rank_biserial,
    verdict,
    wilcoxon_signed_rank,
)
from spt.reports.pairing import PairedSample, pair_records
from spt.reports.records import check_metric, check_records

__all__ = ["COMPARE_COLUMNS", "compare", "seed_spread"]

COMPARISON_KEY = ["backbone", "prompt_mode", "dataset"]
COMPARE_COLUMNS = [
    "backbone",
    "prompt_mode",
    "dataset",
    "reference",
    "baseline",
    "metric",
    "n_pairs",
    "n_seed_pairs",
    "n_seeds",
    "n_unpaired",
    "n_no_prompt",
    "n_invalid",
    "n_duplicate",
    "mean_ref",
    "mean_base",
    "mean_diff",
    "ci_low",
    "ci_high",
    "wilcoxon_stat",
    "p_value",
    "p_holm",
    "rank_biserial",
    "cohens_dz",
    "verdict",
    "note",
]


def _comparison_seed(seed: int, key: tuple) -> list[int]:
    """Bootstrap seed of one comparison: stable whatever else the table holds."""
    return [seed, zlib.crc32("|".join(map(str, key)).encode())]


def test_paired_sample(
    sample: PairedSample, key: tuple, seed: int, n_boot: int, ci_level: float, min_pairs: int
) -> dict:
    """Means, bootstrap CI of the mean difference, Wilcoxon test and effect sizes of one paired
    sample (``key`` seeds its bootstrap); NaN with a note below ``min_pairs`` pairs."""
    n = sample.n_pairs
    diffs = sample.differences
    row = {
        "mean_ref": sample.reference.mean() if n else np.nan,
        "mean_base": sample.baseline.mean() if n else np.nan,
        "mean_diff": diffs.mean() if n else np.nan,
    }
    if n < min_pairs:
        untested = ["ci_low", "ci_high", "wilcoxon_stat", "p_value", "rank_biserial", "cohens_dz"]
        row |= dict.fromkeys(untested, np.nan)
        row["note"] = f"only {n} paired images (< {min_pairs}): not tested"
        return row
    row["ci_low"], row["ci_high"] = bootstrap_mean_ci(
        diffs, seed=_comparison_seed(seed, key), n_boot=n_boot, ci_level=ci_level
    )
    row["wilcoxon_stat"], row["p_value"] = wilcoxon_signed_rank(diffs)
    row["rank_biserial"] = rank_biserial(diffs)
    row["cohens_dz"] = cohens_dz(diffs)
    row["note"] = "all differences are zero" if not np.any(diffs != 0) else ""
    return row


def _with_holm(table: pd.DataFrame, family_by: list[str] | None) -> pd.Series:
    if not family_by:
        return pd.Series(holm_adjust(table["p_value"]), index=table.index)
    adjusted = pd.Series(np.nan, index=table.index)
    for _, family in table.groupby(family_by, sort=False, dropna=False):
        adjusted[family.index] = holm_adjust(family["p_value"])
    return adjusted


def compare(
    records: pd.DataFrame,
    reference: str = "spt",
    reference_stage: str = "final",
    metric: str = "iou",
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    ci_level: float = 0.95,
    min_pairs: int = 6,
    baseline_stage: str = "final",
    family_by: list[str] | None = None,
) -> pd.DataFrame:
    """Paired comparisons of ``reference`` at ``reference_stage`` against every other method.

    Returns one row per (backbone, prompt_mode, dataset, baseline) with the columns of
    ``COMPARE_COLUMNS``: counts of pairs and of dropped records, the means over paired images
    and their difference (reference - baseline), the bootstrap CI of that difference, the
    Wilcoxon statistic and p-value, the Holm-adjusted p-value, the effect sizes, the verdict
    and a note. ``seed`` drives the bootstrap; the settings are kept in ``DataFrame.attrs``.
    """
    check_records(records)
    check_metric(metric)
    if not 0 < alpha < 1:
        raise SuiteError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    is_reference = records["method"] == reference
    ref_records = records[is_reference & (records["stage"] == reference_stage)]
    if ref_records.empty:
        raise SuiteError(
            f"no evaluation records of method {reference!r} at stage {reference_stage!r}; "
            "check the reference method and stage names"
        )
    base_records = records[~is_reference & (records["stage"] == baseline_stage)]
    ref_groups = dict(list(ref_records.groupby(COMPARISON_KEY, sort=True, dropna=False)))
    base_groups = dict(
        list(base_records.groupby(["method", *COMPARISON_KEY], sort=True, dropna=False))
    )
    empty = records.iloc[0:0]

    rows = []
    for baseline in sorted(base_records["method"].unique(), key=str):
        keys = {k[1:] for k in base_groups if k[0] == baseline} | set(ref_groups)
        for key in sorted(keys, key=lambda k: tuple(map(str, k))):
            sample = pair_records(
                ref_groups.get(key, empty), base_groups.get((baseline, *key), empty), metric
            )
            row = dict(zip(COMPARISON_KEY, key, strict=True))
            row |= {"reference": reference, "baseline": baseline, "metric": metric}
            row |= {
                "n_pairs": sample.n_pairs,
                "n_seed_pairs": sample.n_seed_pairs,
                "n_seeds": sample.n_seeds,
                "n_unpaired": sample.n_unpaired,
                "n_no_prompt": sample.n_no_prompt,
                "n_invalid": sample.n_invalid,
                "n_duplicate": sample.n_duplicate,
            }
            test_key = (*key, baseline, metric)
            row |= test_paired_sample(sample, test_key, seed, n_boot, ci_level, min_pairs)
            rows.append(row)

    table = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    table["p_holm"] = _with_holm(table, family_by).astype(float)
    table["verdict"] = [
        verdict(p, d, alpha) for p, d in zip(table["p_holm"], table["mean_diff"], strict=True)
    ]
    table.attrs = {
        "reference": reference,
        "reference_stage": reference_stage,
        "baseline_stage": baseline_stage,
        "metric": metric,
        "alpha": alpha,
        "ci_level": ci_level,
        "n_boot": n_boot,
        "seed": seed,
        "min_pairs": min_pairs,
        "holm_family": "all tested comparisons" if not family_by else f"per {family_by}",
        "n_tested": int(table["p_value"].notna().sum()),
    }
    return table
