"""Significance statistics against independent references (SciPy, statsmodels, hand sums)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from spt.errors import SuiteError
from spt.harness.records import RECORD_COLUMNS
from spt.reports.paired_stats import (
    BETTER,
    NO_DIFFERENCE,
    NOT_TESTED,
    WORSE,
    bootstrap_mean_ci,
    cohens_dz,
    holm_adjust,
    rank_biserial,
    verdict,
    wilcoxon_signed_rank,
)
from spt.reports.stats import COMPARE_COLUMNS, compare, seed_spread


def record(
    method,
    image_id,
    iou,
    *,
    seed=0,
    dataset="mvtec",
    stage="final",
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
        "defect_type": "scratch",
        "image_id": f"{dataset}/{image_id}",
        "prompt_mode": prompt_mode,
        "stage": stage,
        "iou": iou if status == "ok" else np.nan,
        "biou": iou if status == "ok" else np.nan,
        "dice": iou if status == "ok" else np.nan,
        "seconds": 0.01,
        "encode_seconds": 0.05,
        "status": status,
        "reason": "" if status == "ok" else "empty mask",
    }


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def exact_signed_rank_p(diffs: np.ndarray) -> float:
    """Two-sided p of the signed-rank statistic by enumerating all 2**n sign flips."""
    d = diffs[diffs != 0]
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    centre = ranks.sum() / 2
    flips = np.array(list(itertools.product([0, 1], repeat=d.size)))
    null = flips @ ranks
    return float(np.mean(np.abs(null - centre) >= abs(observed - centre) - 1e-12))


def normal_signed_rank_p(diffs: np.ndarray) -> float:
    """Two-sided p of the tie-corrected normal approximation, zeros dropped, no continuity."""
    d = diffs[diffs != 0]
    n = d.size
    ranks = stats.rankdata(np.abs(d))
    r_plus = ranks[d > 0].sum()
    _, tie_sizes = np.unique(np.abs(d), return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24 - np.sum(tie_sizes**3 - tie_sizes) / 48
    z = (r_plus - n * (n + 1) / 4) / np.sqrt(variance)
    return float(2 * stats.norm.sf(abs(z)))


# --- Wilcoxon -------------------------------------------------------------------------


def test_wilcoxon_hand_case_all_positive():
    # 8 distinct positive differences: only the all-positive and all-negative sign
    # patterns are as extreme, so p = 2 / 2**8.
    stat, p = wilcoxon_signed_rank(np.arange(1, 9) / 10)
    assert stat == 0.0
    assert p == pytest.approx(2 / 256)


def test_wilcoxon_statistic_is_smaller_rank_sum():
    # ranks of |d| = 1, 2, 3, 4; R+ = 1 + 3 + 4 = 8, R- = 2
    stat, _ = wilcoxon_signed_rank([1.0, -2.0, 3.0, 4.0])
    assert stat == 2.0


@pytest.mark.parametrize("case", range(4))
def test_wilcoxon_small_samples_match_enumeration(case):
    rng = np.random.default_rng(case)
    diffs = rng.normal(0.3, 1.0, size=9 + case)
    if case >= 2:  # ties and zeros: 'auto' switches to an exhaustive permutation
        diffs = np.round(diffs, 1)
        diffs[:2] = 0.0
    _, p = wilcoxon_signed_rank(diffs)
    assert p == pytest.approx(exact_signed_rank_p(diffs), rel=1e-9)


@pytest.mark.parametrize("with_ties", [False, True])
def test_wilcoxon_large_samples_match_normal_approximation(with_ties):
    rng = np.random.default_rng(7)
    diffs = rng.normal(0.15, 1.0, size=120)
    if with_ties:
        diffs = np.round(diffs, 1)  # many ties and some zeros
        assert np.any(diffs == 0)
    _, p = wilcoxon_signed_rank(diffs)
    assert p == pytest.approx(normal_signed_rank_p(diffs), rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_wilcoxon_equals_scipy_with_documented_options(seed):
    rng = np.random.default_rng(100 + seed)
    diffs = np.round(rng.normal(0.1, 0.5, size=[20, 40, 60, 200, 300][seed]), 2)
    stat, p = wilcoxon_signed_rank(diffs)
    reference = stats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided")
    assert stat == reference.statistic
    assert p == reference.pvalue


def test_wilcoxon_degenerate_samples():
    assert wilcoxon_signed_rank(np.zeros(12)) == (0.0, 1.0)
    stat, p = wilcoxon_signed_rank([])
    assert np.isnan(stat) and np.isnan(p)
    with pytest.raises(ValueError):
        wilcoxon_signed_rank([0.1, np.nan])


# --- effect sizes ----------------------------------------------------------------------


def test_rank_biserial_hand_cases():
    assert rank_biserial([1.0, -2.0, 3.0, 4.0]) == pytest.approx((8 - 2) / 10)
    # zero dropped; |1|,|1|,|-2| get ranks 1.5, 1.5, 3: R+ = R- = 3
    assert rank_biserial([0.0, 1.0, 1.0, -2.0]) == 0.0
    assert rank_biserial([0.5, 0.2, 0.1]) == 1.0
    assert rank_biserial([-0.5, -0.2]) == -1.0
    assert rank_biserial(np.zeros(5)) == 0.0
    assert np.isnan(rank_biserial([]))


def test_rank_biserial_agrees_with_scipy_statistic():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.4, 1.0, size=30)  # continuous: no ties, no zeros
    total = 30 * 31 / 2
    smaller = stats.wilcoxon(diffs).statistic
    sign = np.sign(np.median(diffs))
    r_plus = smaller if sign < 0 else total - smaller
    assert rank_biserial(diffs) == pytest.approx((2 * r_plus - total) / total)


def test_cohens_dz_equals_one_sample_t_over_root_n():
    rng = np.random.default_rng(4)
    diffs = rng.normal(0.2, 0.7, size=50)
    t = stats.ttest_1samp(diffs, 0.0).statistic
    assert cohens_dz(diffs) == pytest.approx(t / np.sqrt(50))
    assert cohens_dz([1.0, 3.0]) == pytest.approx(2.0 / np.sqrt(2.0))


def test_cohens_dz_constant_and_tiny_samples():
    assert cohens_dz(np.zeros(4)) == 0.0
    assert np.isnan(cohens_dz(np.full(4, 0.2)))
    assert np.isnan(cohens_dz([0.3]))


# --- bootstrap -------------------------------------------------------------------------


def test_bootstrap_ci_contains_true_shift():
    rng = np.random.default_rng(5)
    true_shift = 0.3
    diffs = true_shift + rng.normal(0.0, 1.0, size=3000)
    low, high = bootstrap_mean_ci(diffs, seed=11, n_boot=4000)
    assert low < true_shift < high
    assert low < diffs.mean() < high


def test_bootstrap_ci_matches_scipy_and_normal_theory():
    diffs = np.random.default_rng(15).normal(0.1, 1.0, size=300)
    low, high = bootstrap_mean_ci(diffs, seed=11, n_boot=20_000)
    reference = stats.bootstrap(
        (diffs,), np.mean, n_resamples=20_000, method="percentile", rng=np.random.default_rng(12)
    ).confidence_interval
    # Different resamples agree up to Monte Carlo error (~0.002 per endpoint here), far
    # below the 0.016 that a 97.5% instead of a 95% interval would move them.
    assert low == pytest.approx(reference.low, abs=0.006)
    assert high == pytest.approx(reference.high, abs=0.006)
    half_width = stats.norm.ppf(0.975) * diffs.std(ddof=0) / np.sqrt(diffs.size)
    assert low == pytest.approx(diffs.mean() - half_width, abs=0.006)
    assert high == pytest.approx(diffs.mean() + half_width, abs=0.006)


def test_bootstrap_reproducible_with_seed_and_differs_with_another():
    rng = np.random.default_rng(6)
    diffs = rng.normal(0.05, 0.2, size=300)
    first = bootstrap_mean_ci(diffs, seed=1, n_boot=2000)
    assert bootstrap_mean_ci(diffs, seed=1, n_boot=2000) == first
    assert bootstrap_mean_ci(diffs, seed=2, n_boot=2000) != first


def test_bootstrap_level_and_degenerate_inputs():
    rng = np.random.default_rng(8)
    diffs = rng.normal(0.0, 1.0, size=200)
    narrow = bootstrap_mean_ci(diffs, seed=0, n_boot=3000, ci_level=0.5)
    wide = bootstrap_mean_ci(diffs, seed=0, n_boot=3000, ci_level=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    assert bootstrap_mean_ci(np.full(10, 0.25), seed=0, n_boot=100) == (0.25, 0.25)
    assert all(np.isnan(bootstrap_mean_ci([], seed=0)))
    with pytest.raises(ValueError):
        bootstrap_mean_ci(diffs, n_boot=0)


def test_bootstrap_10k_by_300_is_fast():
    diffs = np.random.default_rng(9).normal(size=300)
    start = time.perf_counter()
    bootstrap_mean_ci(diffs, seed=0, n_boot=10_000)
    assert time.perf_counter() - start < 2.0


# --- Holm ------------------------------------------------------------------------------


def test_holm_hand_case():
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.03, 0.06, 0.06
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.parametrize("seed", range(12))
def test_holm_equals_statsmodels(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    p = rng.uniform(0, 0.2, size=m) ** rng.uniform(0.5, 2)
    if m > 3:
        p[1] = p[0]  # a tie
        p[2] = 1.0
        p[3] = 0.0
    expected = multipletests(p, method="holm")[1]
    np.testing.assert_allclose(holm_adjust(p), expected, rtol=0, atol=1e-15)


def test_holm_leaves_nan_out_of_the_family():
    p = np.array([0.01, np.nan, 0.02, 0.5, np.nan])
    adjusted = holm_adjust(p)
    tested = ~np.isnan(p)
    assert np.all(np.isnan(adjusted[~tested]))
    np.testing.assert_allclose(adjusted[tested], multipletests(p[tested], method="holm")[1])
    assert np.all(np.isnan(holm_adjust([np.nan, np.nan])))


# --- verdict ---------------------------------------------------------------------------


def test_verdict_rule():
    assert verdict(0.01, 0.2) == BETTER
    assert verdict(0.01, -0.2) == WORSE
    assert verdict(0.2, 0.3) == NO_DIFFERENCE
    assert verdict(0.05, 0.3, alpha=0.05) == NO_DIFFERENCE  # strictly below alpha
    assert verdict(0.01, 0.0) == NO_DIFFERENCE
    assert verdict(np.nan, 0.3) == NOT_TESTED


# --- compare on records ----------------------------------------------------------------


def planted_records(n=40) -> pd.DataFrame:
    """spt beats 'weak', loses to 'strong', ties 'twin' exactly and 'mirror' in rank."""
    # Dyadic values keep every sum and difference exact in floating point.
    rng = np.random.default_rng(21)
    base = rng.integers(20, 40, size=n) / 64
    noise = rng.integers(1, 12, size=n) / 256
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rows = []
    for i in range(n):
        rows.append(record("spt", i, base[i] + 0.01, stage="draft"))
        rows.append(record("spt", i, base[i]))
        rows.append(record("weak", i, base[i] - 0.1 - noise[i]))
        rows.append(record("strong", i, base[i] + 0.1 + noise[i]))
        rows.append(record("twin", i, base[i]))
        # +e on even images, -e on odd ones with the same magnitudes: W+ = W-, p = 1
        rows.append(record("mirror", i, base[i] + signs[i] * noise[i // 2 * 2]))
    return frame(rows)


def test_compare_planted_verdicts():
    table = compare(planted_records(), n_boot=500)
    assert list(table.columns) == COMPARE_COLUMNS
    verdicts = dict(zip(table["baseline"], table["verdict"], strict=True))
    assert verdicts == {
        "mirror": NO_DIFFERENCE,
        "strong": WORSE,
        "twin": NO_DIFFERENCE,
        "weak": BETTER,
    }
    twin = table.set_index("baseline").loc["twin"]
    assert twin["p_value"] == 1.0 and twin["mean_diff"] == 0.0
    assert twin["ci_low"] == 0.0 and twin["ci_high"] == 0.0
    assert twin["note"] == "all differences are zero"
    mirror = table.set_index("baseline").loc["mirror"]
    assert mirror["p_value"] == 1.0
    weak = table.set_index("baseline").loc["weak"]
    assert weak["rank_biserial"] == 1.0 and weak["ci_low"] > 0


def test_compare_hand_computable_p_and_means():
    ref = [0.5, 0.6, 0.7, 0.8, 0.55, 0.65, 0.75, 0.85]
    gains = np.arange(1, 9) / 100  # distinct positive differences
    rows = [record("spt", i, v) for i, v in enumerate(ref)]
    rows += [record("sam", i, v - g) for i, (v, g) in enumerate(zip(ref, gains, strict=True))]
    row = compare(frame(rows), n_boot=200).iloc[0]
    assert row["n_pairs"] == 8
    assert row["p_value"] == pytest.approx(2 / 256)
    assert row["p_holm"] == row["p_value"]  # a family of one
    assert row["mean_ref"] == pytest.approx(np.mean(ref))
    assert row["mean_diff"] == pytest.approx(np.mean(gains))
    assert row["verdict"] == BETTER


def test_compare_counts_unpaired_no_prompt_invalid_and_duplicates():
    rows = [record("spt", i, 0.5 + i / 100) for i in range(10)]
    rows[0] = record("spt", 0, np.nan, status="no_prompt")
    rows += [record("sam", i, 0.4 + i / 200) for i in range(9)]  # image 9 missing
    rows.append(record("sam", 10, 0.4))  # image 10 has no reference
    rows[10 + 1] = record("sam", 1, np.nan)  # status ok but NaN: invalid
    rows.append(record("sam", 2, 0.99))  # duplicate key: the first record is kept
    table = compare(frame(rows), n_boot=200)
    row = table.iloc[0]
    assert row["n_unpaired"] == 2
    assert row["n_no_prompt"] == 1
    assert row["n_invalid"] == 1
    assert row["n_duplicate"] == 1
    kept = range(2, 9)
    assert row["n_pairs"] == len(kept)
    assert row["mean_ref"] == pytest.approx(np.mean([0.5 + i / 100 for i in kept]))
    assert row["mean_base"] == pytest.approx(np.mean([0.4 + i / 200 for i in kept]))


def test_compare_too_few_pairs_not_tested_and_outside_holm_family():
    rows = [record("spt", i, 0.5 + i / 50) for i in range(12)]
    rows += [record("sam", i, 0.4 + i / 60) for i in range(12)]
    rows += [record("lora", i, 0.45) for i in range(3)]  # only 3 pairs
    rows += [record("spt", i, 0.7, dataset="visa") for i in range(8)]
    rows += [record("sam", i, 0.6 - i / 100, dataset="visa") for i in range(8)]
    table = compare(frame(rows), n_boot=200)
    few = table[table["baseline"] == "lora"].set_index("dataset")
    assert few.loc["mvtec", "verdict"] == NOT_TESTED
    assert np.isnan(few.loc["mvtec", "p_value"]) and np.isnan(few.loc["mvtec", "p_holm"])
    assert "3 paired images" in few.loc["mvtec", "note"]
    assert few.loc["visa", "n_pairs"] == 0  # lora never ran on visa: reference rows unpaired
    assert few.loc["visa", "n_unpaired"] == 8
    tested = table["p_value"].notna()
    assert tested.sum() == 2 and table.attrs["n_tested"] == 2
    np.testing.assert_allclose(
        table.loc[tested, "p_holm"], multipletests(table.loc[tested, "p_value"], method="holm")[1]
    )


def test_compare_holm_family_spans_all_comparisons_or_splits():
    rows = []
    rng = np.random.default_rng(30)
    for mode in ("box", "point"):
        for dataset in ("mvtec", "visa"):
            ref = rng.uniform(0.4, 0.8, size=15)
            rows += [
                record("spt", i, v, dataset=dataset, prompt_mode=mode) for i, v in enumerate(ref)
            ]
            for method, shift in (("sam", 0.03), ("lora", 0.0)):
                base = ref - shift + rng.normal(0, 0.05, size=15)
                rows += [
                    record(method, i, v, dataset=dataset, prompt_mode=mode)
                    for i, v in enumerate(base)
                ]
    records = frame(rows)
    whole = compare(records, n_boot=100)
    assert len(whole) == 8
    np.testing.assert_allclose(whole["p_holm"], multipletests(whole["p_value"], method="holm")[1])
    split = compare(records, n_boot=100, family_by=["prompt_mode"])
    for _, part in split.groupby("prompt_mode"):
        np.testing.assert_allclose(part["p_holm"], multipletests(part["p_value"], method="holm")[1])


def test_compare_pairs_per_seed_then_averages_over_seeds():
    rng = np.random.default_rng(40)
    rows, diffs_by_image = [], {}
    for seed in (0, 1, 2):
        ref = rng.uniform(0.4, 0.8, size=10)
        base = ref - rng.normal(0.05, 0.05, size=10)
        for i in range(10):
            rows.append(record("spt", i, ref[i], seed=seed))
            if seed < 2:  # the baseline lacks seed 2: those reference records are unpaired
                rows.append(record("sam", i, base[i], seed=seed))
                diffs_by_image.setdefault(i, []).append(ref[i] - base[i])
    row = compare(frame(rows), n_boot=300, seed=5).iloc[0]
    per_image = np.array([np.mean(diffs_by_image[i]) for i in range(10)])
    assert row["n_pairs"] == 10 and row["n_seed_pairs"] == 20 and row["n_seeds"] == 2
    assert row["n_unpaired"] == 10
    assert row["mean_diff"] == pytest.approx(per_image.mean())
    assert row["p_value"] == pytest.approx(exact_signed_rank_p(per_image))


def test_compare_bootstrap_seeded():
    records = planted_records(20)
    first = compare(records, n_boot=300, seed=1)
    again = compare(records, n_boot=300, seed=1)
    other = compare(records, n_boot=300, seed=2)
    pd.testing.assert_frame_equal(first, again)
    weak = first["baseline"] == "weak"
    assert first.loc[weak, "ci_low"].item() != other.loc[weak, "ci_low"].item()


def test_compare_reference_stage_draft():
    table = compare(planted_records(), reference_stage="draft", n_boot=100)
    twin = table.set_index("baseline").loc["twin"]
    assert twin["mean_diff"] == pytest.approx(0.01)  # draft rows are base + 0.01


def test_compare_rejects_bad_setup_with_suite_error():
    records = planted_records(6)
    with pytest.raises(SuiteError, match="lack column"):
        compare(records.drop(columns=["image_id"]))
    with pytest.raises(SuiteError, match="'sptx'"):
        compare(records, reference="sptx")
    with pytest.raises(SuiteError, match="unknown metric"):
        compare(records, metric="auroc")


# --- seed spread -----------------------------------------------------------------------


def test_seed_spread_matches_numpy():
    rng = np.random.default_rng(50)
    rows, per_seed = [], {}
    for seed in (0, 1, 2):
        for dataset, n in (("mvtec", 4), ("visa", 2)):
            values = rng.uniform(0.2, 0.9, size=n)
            per_seed[(seed, dataset)] = values.mean()
            rows += [record("spt", i, v, seed=seed, dataset=dataset) for i, v in enumerate(values)]
            rows.append(record("spt", 99, np.nan, seed=seed, dataset=dataset, status="no_prompt"))
    spread = seed_spread(frame(rows)).set_index("dataset")
    for dataset in ("mvtec", "visa"):
        values = np.array([per_seed[(s, dataset)] for s in (0, 1, 2)])
        got = spread.loc[dataset]
        assert got["method"] == "spt" and got["n_seeds"] == 3
        assert got["mean"] == pytest.approx(values.mean())
        assert got["std"] == pytest.approx(values.std(ddof=1))
        assert got["min"] == pytest.approx(values.min())
        assert got["max"] == pytest.approx(values.max())
    over = np.array([(per_seed[(s, "mvtec")] + per_seed[(s, "visa")]) / 2 for s in (0, 1, 2)])
    assert spread.loc["mean", "mean"] == pytest.approx(over.mean())
    assert spread.loc["mean", "std"] == pytest.approx(over.std(ddof=1))


def test_seed_spread_single_seed_and_incomplete_seed():
    rows = [record("sam", i, 0.5, dataset=d) for i in range(3) for d in ("mvtec", "visa")]
    rows += [record("sam", i, 0.7, seed=1, dataset="mvtec") for i in range(3)]  # no visa
    spread = seed_spread(frame(rows)).set_index("dataset")
    assert spread.loc["visa", "n_seeds"] == 1 and np.isnan(spread.loc["visa", "std"])
    assert spread.loc["mvtec", "n_seeds"] == 2
    assert spread.loc["mean", "n_seeds"] == 1  # seed 1 lacks visa: no mean over datasets


def test_compare_with_nothing_scorable_reports_counts():
    rows = [record(m, i, np.nan, status="no_prompt") for m in ("spt", "sam") for i in range(4)]
    rows += [record("spt", 9, 0.5)]  # scorable but unpaired
    row = compare(frame(rows)).iloc[0]
    assert row["n_pairs"] == 0 and row["n_no_prompt"] == 4 and row["n_unpaired"] == 1
    assert row["verdict"] == NOT_TESTED
    assert np.isnan(row["mean_diff"]) and np.isnan(row["p_holm"])


def test_compare_accepts_missing_seeds():
    rows = [record("spt", i, 0.5 + i / 20, seed=np.nan) for i in range(8)]
    rows += [record("sam", i, 0.4, seed=np.nan) for i in range(8)]
    row = compare(frame(rows), n_boot=100).iloc[0]
    assert row["n_pairs"] == 8 and row["n_seeds"] == 1
    assert row["p_value"] == pytest.approx(2 / 256)
