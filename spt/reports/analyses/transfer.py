"""The transfer section: in-domain against held-out IoU per method (docs/analyses.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spt.reports.analyses.common import (
    FINAL_STAGE,
    ZERO_SHOT,
    StatsSettings,
    interval,
    key_text,
    method_order,
    paired_tests,
    path_value,
    plural,
    point_rows,
    read_tree,
    tests_markdown,
    verdict_counts,
    write_metrics,
    write_text,
)
from spt.reports.figures import save_figure
from spt.reports.paired_stats import holm_adjust, verdict
from spt.reports.render import markdown


def transfer_report(
    root: Path,
    eval_root: Path,
    section,
    backbone: str,
    settings: StatsSettings,
    out: Path,
    metrics: Path | None = None,
) -> list[Path]:
    """In-domain against held-out IoU per method and held-out dataset. ``metrics``: where the
    DVC metrics go (held-out IoU and its change from in-domain per mode, dataset, method)."""
    from spt.reports.pipeline_report import load_records

    held = read_tree(root, backbone)
    held["held_out"] = path_value(held["_path"], r"without_(.+)", "without_<dataset>", root)
    held = held[held["dataset"] == held["held_out"]].drop(columns="_path")
    main = load_records(eval_root)
    main = main[(main["backbone"] == backbone) & (main["stage"] == FINAL_STAGE)]
    modes = list(section.prompt_modes)
    in_domain = main[main["prompt_mode"].isin(modes) & main["dataset"].isin(held["held_out"].unique())
                     & main["method"].isin([*section.methods, ZERO_SHOT])]  # fmt: skip
    in_domain = in_domain.assign(held_out=in_domain["dataset"])
    keys = ["prompt_mode", "held_out"]
    inside = point_rows(in_domain, keys, settings).rename(
        columns={"mean": "in_domain", "ci_low": "in_ci_low", "ci_high": "in_ci_high"}
    )
    outside = point_rows(held, keys, settings).rename(
        columns={"mean": "held_out_iou", "ci_low": "out_ci_low", "ci_high": "out_ci_high"}
    )
    table = inside[[*keys, "method", "in_domain", "in_ci_low", "in_ci_high"]].merge(
        outside[[*keys, "method", "n_images", "held_out_iou", "out_ci_low", "out_ci_high"]],
        on=[*keys, "method"], how="outer")  # fmt: skip
    # the gap of each method (held-out - in-domain, paired per image)
    gap_records = pd.concat(
        [
            held.assign(side="held_out"),
            in_domain[in_domain["method"] != ZERO_SHOT].assign(side="in_domain"),
        ]
    )
    gap_records = gap_records.assign(owner=gap_records["method"], method=gap_records["side"])
    gap_tests = paired_tests(gap_records, [*keys, "owner"], settings, reference="held_out")
    vs_reference = paired_tests(held, keys, settings)
    family = pd.concat([gap_tests.assign(part="gap"), vs_reference.assign(part="reference")])
    if not family.empty:
        family["p_holm"] = holm_adjust(family["p_value"].astype(float))
        family["verdict"] = [
            verdict(p, d, settings.alpha)
            for p, d in zip(family["p_holm"], family["mean_diff"], strict=True)
        ]
    zero = table["method"] == ZERO_SHOT  # one model for both columns: its score is the same
    table.loc[zero, ["held_out_iou", "out_ci_low", "out_ci_high"]] = table.loc[
        zero, ["in_domain", "in_ci_low", "in_ci_high"]
    ].to_numpy()
    gaps = family[family["part"] == "gap"]
    if not gaps.empty:
        gap_cols = gaps.rename(
            columns={"owner": "method", "mean_diff": "change", "p_holm": "gap_p_holm"}
        )
        table = table.merge(
            gap_cols[[*keys, "method", "change", "gap_p_holm"]], on=[*keys, "method"], how="left"
        )
    order = method_order(table["method"].unique(), settings.reference)
    table["_order"] = table["method"].map({m: i for i, m in enumerate(order)})
    table = table.sort_values([*keys, "_order"]).drop(columns="_order").reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    produced = [write_text(out, "transfer.csv", table.to_csv(index=False)),
                write_text(out, "transfer_significance.csv", family.to_csv(index=False))]  # fmt: skip
    produced.append(_transfer_figure(table, order, out / "transfer.png"))
    trained = table[table["method"] != ZERO_SHOT].dropna(subset=["held_out_iou", "in_domain"])
    gap_mean = (trained["held_out_iou"] - trained["in_domain"]).groupby(trained["method"]).mean()
    text = ", ".join(f"{m} {gap_mean[m]:+.3f}" for m in order if m in gap_mean)
    best = gap_mean.idxmax() if not gap_mean.empty else "none"
    lines = [
        f"# Cross-dataset transfer ({backbone})",
        "",
        f"Each method in {', '.join(section.methods)} trained without one dataset (same recipe), "
        "then scored on it (held-out) and compared with the main run that trained on it "
        "(in-domain); zero-shot is the same model in both columns. Mean IoU over the held-out "
        "dataset's test images with 95% bootstrap intervals. Holm over the gap tests "
        f"(held-out vs in-domain, per method) and {settings.reference} vs each method on the "
        f"held-out data together ({len(family)} comparisons).",
        "",
        "![transfer](transfer.png)",
        "",
        f"**Reading.** Mean change of IoU when the dataset is held out: {text}; {best} loses "
        f"least. {_gap_counts(family)} On the held-out data, "
        f"{verdict_counts(family[family['part'] == 'reference'], settings.reference)}.",
        "",
        markdown(_transfer_cells(table, keys)),
        "",
        "## Paired tests",
        "",
        "Held-out against in-domain, per method (reference = held-out):",
        "",
        tests_markdown(_gap_rows(family), keys, "mode dataset"),
        "",
        f"{settings.reference} against each method on the held-out data:",
        "",
        tests_markdown(family[family["part"] == "reference"], keys, "mode dataset"),
    ]
    produced.append(write_text(out, "transfer.md", "\n".join(lines) + "\n"))
    values = {}
    for row in table.itertuples():
        key = f"{row.prompt_mode}.{row.held_out}.{row.method}"
        values[f"{key}.held_out_iou"] = row.held_out_iou
        if row.method != ZERO_SHOT and "change" in table:
            values[f"{key}.change"] = row.change
    return produced + write_metrics(metrics, values)


def _gap_counts(family: pd.DataFrame) -> str:
    """How many of the per-method transfer gaps are significant after Holm."""
    gaps = family[family["part"] == "gap"] if not family.empty else family
    if gaps.empty:
        return "No gap could be tested."
    significant = int(gaps["verdict"].isin(["better", "worse"]).sum())
    return f"{significant} of {plural(len(gaps), 'gap')} significant after Holm."


def _gap_rows(family: pd.DataFrame) -> pd.DataFrame:
    """The gap tests with the method as the compared column (their reference is held-out)."""
    gaps = family[family["part"] == "gap"] if not family.empty else family
    return gaps.assign(baseline=gaps["owner"] + " in-domain") if not gaps.empty else gaps


def _transfer_cells(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per (mode, dataset, method): in-domain, held-out, change, its Holm p."""
    rows = {}
    for _, row in table.iterrows():
        label = key_text(tuple(row[k] for k in keys)) + f" {row['method']}"
        p = float(row.get("gap_p_holm", np.nan))
        rows[label] = {
            "in-domain [95% CI]": interval(row["in_domain"], row["in_ci_low"], row["in_ci_high"]),
            "held-out [95% CI]": interval(
                row["held_out_iou"], row["out_ci_low"], row["out_ci_high"]
            ),
            "change": "–"
            if not np.isfinite(row.get("change", np.nan))
            else f"{row['change']:+.3f}",
            "p (Holm)": "n/a" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}"),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "mode dataset method"
    return frame


def _transfer_figure(table: pd.DataFrame, order: list[str], path: Path) -> Path:
    groups = list(dict.fromkeys(zip(table["prompt_mode"], table["held_out"], strict=True)))
    fig = Figure(
        figsize=(max(4.0, 1.6 * len(groups) * max(1, len(order)) / 2), 3.4), layout="constrained"
    )
    ax = fig.subplots()
    width = 0.8 / max(1, len(order))
    for i, method in enumerate(order):
        for j, (mode, dataset) in enumerate(groups):
            row = table[
                (table["method"] == method)
                & (table["prompt_mode"] == mode)
                & (table["held_out"] == dataset)
            ]
            if row.empty:
                continue
            x = j + (i - (len(order) - 1) / 2) * width
            ax.bar(x, row["in_domain"].iloc[0], width * 0.9, color=f"C{i}", alpha=0.35)
            ax.bar(x, row["held_out_iou"].iloc[0], width * 0.5, color=f"C{i}",
                   label=method if j == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(groups)), [f"{d}\n({m})" for m, d in groups])
    ax.set_ylabel("mean IoU (wide pale bar: in-domain; narrow: held-out)")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)
    return path
