"""Statistics of one paired sample: differences ``d = reference - baseline`` per image.

Conventions shared by every function here:

* Wilcoxon signed-rank, two-sided, ``zero_method='wilcox'``: images where both methods
  score exactly the same carry no evidence about which is better, so they are dropped
  before ranking (they still count in ``n_pairs``, the means and the bootstrap).
  ``method='auto'`` in SciPy: the exact null distribution for up to 50 nonzero differences
  without ties, an exhaustive sign-flip permutation for up to 13 differences with ties, and
  the tie-corrected normal approximation (no continuity correction) otherwise. When every
  difference is zero the test has nothing to rank; we report statistic 0 and p = 1.
* Effect sizes: the matched-pairs rank-biserial correlation (Kerby's simple difference,
  ``(R+ - R-) / (R+ + R-)`` over the same ranks the Wilcoxon test uses; +1 means the
  reference wins every non-tied image) and Cohen's d_z (mean difference over the sample
  standard deviation of the differences, ddof=1).
* Bootstrap: percentile interval of the mean difference, resampling images with
  replacement (the pairs stay together because we resample their differences).
* Holm step-down adjustment over a family of p-values; NaN p-values (comparisons that
  were not tested) are left out of the family and stay NaN.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no significant difference"
NOT_TESTED = "not tested"

# Rows of bootstrap indices drawn at once are capped so memory stays ~32 MB whatever n is.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000


def _as_differences(diffs) -> np.ndarray:
    d = np.asarray(diffs, dtype=float).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError("paired differences must be finite; drop NaN pairs before testing")
    return d


def wilcoxon_signed_rank(diffs) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of ``diffs``: ``(statistic, p_value)``.

    The statistic is SciPy's: the smaller of the positive and negative rank sums.
    An empty sample gives ``(nan, nan)``; an all-zero sample gives ``(0.0, 1.0)``.
    """
    d = _as_differences(diffs)
    if d.size == 0:
        return float("nan"), float("nan")
    if not np.any(d != 0):
        return 0.0, 1.0
    with warnings.catch_warnings():
        # SciPy warns that exact p-values are unavailable with ties; 'auto' already falls
        # back to a permutation or the normal approximation, which is what we document.
        warnings.simplefilter("ignore", UserWarning)
        result = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
    return float(result.statistic), float(result.pvalue)


def rank_biserial(diffs) -> float:
    """Matched-pairs rank-biserial correlation in [-1, 1]; zero differences are dropped.

    All-zero differences give 0.0 (no image favours either side); an empty sample gives NaN.
    """
    d = _as_differences(diffs)
    if d.size == 0:
        return float("nan")
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(nonzero))  # midranks for ties, as in the Wilcoxon test
    r_plus = ranks[nonzero > 0].sum()
    r_minus = ranks[nonzero < 0].sum()
    return float((r_plus - r_minus) / (r_plus + r_minus))


def cohens_dz(diffs) -> float:
    """Cohen's d_z = mean(d) / sd(d) with ddof=1.

    Fewer than two differences give NaN. Constant differences have sd 0: d_z is 0.0 when
    they are all zero and NaN (unbounded) otherwise.
    """
    d = _as_differences(diffs)
    if d.size < 2:
        return float("nan")
    mean = d.mean()
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if mean == 0 else float("nan")
    return float(mean / sd)


def bootstrap_mean_ci(
    diffs,
    seed: int | list[int] | np.random.Generator = 0,
    n_boot: int = 10_000,
    ci_level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of the mean of ``diffs``.

    ``seed`` feeds ``numpy.random.default_rng`` (an int, a list of ints or a Generator), so
    the same seed always gives the same interval. An empty sample gives ``(nan, nan)``.
    """
    d = _as_differences(diffs)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must lie strictly between 0 and 1, got {ci_level}")
    if d.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n = d.size
    boot_means = np.empty(n_boot)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        resampled = rng.integers(0, n, size=(stop - start, n))
        boot_means[start:stop] = d[resampled].mean(axis=1)
    tail = (1 - ci_level) / 2
    low, high = np.quantile(boot_means, [tail, 1 - tail])
    return float(low), float(high)


def holm_adjust(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order; NaN entries stay NaN.

    Sorted ascending, ``p_adj(i) = min(1, max_{j <= i} (m - j + 1) * p(j))`` with m the
    number of non-NaN p-values. Ties get equal adjusted values.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    family = p[tested]
    if np.any((family < 0) | (family > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = family.size
    if m == 0:
        return adjusted
    order = np.argsort(family, kind="stable")
    multipliers = m - np.arange(m)
    stepped = np.minimum(1.0, np.maximum.accumulate(multipliers * family[order]))
    in_input_order = np.empty(m)
    in_input_order[order] = stepped
    adjusted[tested] = in_input_order
    return adjusted


def verdict(p_adjusted: float, mean_diff: float, alpha: float = 0.05) -> str:
    """Plain verdict on the reference: better / worse / no significant difference.

    Significant means adjusted p < alpha; the direction is the sign of the mean difference.
    A NaN adjusted p (the comparison was not tested) gives 'not tested'.
    """
    if np.isnan(p_adjusted):
        return NOT_TESTED
    if p_adjusted < alpha and mean_diff > 0:
        return BETTER
    if p_adjusted < alpha and mean_diff < 0:
        return WORSE
    return NO_DIFFERENCE
