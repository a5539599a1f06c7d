"""The significance table of ``spt.reports.stats.compare`` as markdown and as JSON.

The settings ``compare`` keeps in ``DataFrame.attrs`` (alpha, bootstrap size, seed, Holm
family) head both reports; a frame that lost them still renders, without that header.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from spt.reports.paired_stats import BETTER, NO_DIFFERENCE, NOT_TESTED, WORSE
from spt.reports.render import MISSING, format_cell

_DROP_REASONS = {
    "n_unpaired": "unpaired",
    "n_no_prompt": "no prompt",
    "n_invalid": "invalid",
    "n_duplicate": "duplicate",
}


def _json_safe(value):
    """Plain Python values for ``json.dumps``: NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def significance_json(table: pd.DataFrame) -> str:
    """``{"settings": {...}, "comparisons": [one object per row]}``; NaN is written as null."""
    document = {
        "settings": table.attrs,
        "comparisons": table.to_dict(orient="records"),
    }
    return json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n"


def _p_text(p: float) -> str:
    if p is None or np.isnan(p):
        return MISSING
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def _cell(text) -> str:
    return str(text).replace("|", r"\|")


def _dropped_text(row: pd.Series) -> str:
    parts = [f"{int(row[c])} {name}" for c, name in _DROP_REASONS.items() if row[c]]
    if row.get("note"):
        parts.append(str(row["note"]))
    return "; ".join(parts)


def _header(attrs: dict) -> list[str]:
    if not attrs:
        return ["# Significance report", ""]
    ci = round(100 * attrs["ci_level"])
    return [
        f"# Significance: {attrs['reference']} ({attrs['reference_stage']}) against each "
        f"baseline on {attrs['metric']}",
        "",
        "Records are paired on (dataset, image_id, prompt_mode, seed) and averaged per image "
        "over seeds; Δ = reference − baseline. Two-sided Wilcoxon signed-rank test on the "
        f"per-image differences (zero differences dropped), {ci}% percentile bootstrap CI "
        f"of the mean difference ({attrs['n_boot']} resamples, seed {attrs['seed']}), Holm "
        f"correction over {attrs['holm_family']} ({attrs['n_tested']} tests), "
        f"alpha = {attrs['alpha']}. r_rb: matched-pairs rank-biserial correlation; d_z: "
        "mean difference over the standard deviation of the differences. Verdict: better or "
        "worse when the Holm-adjusted p is below alpha, by the sign of the mean difference; "
        f"comparisons with fewer than {attrs['min_pairs']} pairs are not tested.",
        "",
    ]


def significance_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A summary line of verdict counts, then one table per (backbone, prompt mode)."""
    lines = _header(table.attrs)
    counts = table["verdict"].value_counts()
    summary = ", ".join(
        f"{int(counts.get(v, 0))} {v}" for v in (BETTER, NO_DIFFERENCE, WORSE, NOT_TESTED)
    )
    lines += [f"Verdicts: {summary}.", ""]
    columns = ["dataset", "baseline", "n", "Δ mean [CI]", "p", "p (Holm)", "r_rb", "d_z"]
    columns += ["verdict", "dropped / notes"]
    for (backbone, prompt_mode), part in table.groupby(
        ["backbone", "prompt_mode"], sort=True, dropna=False
    ):
        lines += [f"## Backbone {backbone}, prompt mode {prompt_mode}", ""]
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "|".join([" --- "] * 2 + [" ---: "] * 6 + [" --- "] * 2) + "|")
        for _, row in part.iterrows():
            diff = format_cell(row["mean_diff"], digits)
            ci = f"[{format_cell(row['ci_low'], digits)}, {format_cell(row['ci_high'], digits)}]"
            cells = [
                row["dataset"],
                row["baseline"],
                int(row["n_pairs"]),
                f"{diff} {ci}",
                _p_text(row["p_value"]),
                _p_text(row["p_holm"]),
                format_cell(row["rank_biserial"], 2),
                format_cell(row["cohens_dz"], 2),
                row["verdict"],
                _dropped_text(row),
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)
