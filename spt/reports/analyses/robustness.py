"""The robustness section: prompt-perturbation curves and corruption severities (docs/analyses.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spt.errors import SuiteError
from spt.reports.analyses.common import (
    StatsSettings,
    change_records,
    change_sentence,
    line_figure,
    method_order,
    paired_tests,
    pivot_markdown,
    point_rows,
    read_tree,
    tests_markdown,
    verdict_counts,
    write_metrics,
    write_text,
)
from spt.reports.paired_stats import holm_adjust, verdict


def robustness_report(
    root: Path,
    section,
    backbone: str,
    settings: StatsSettings,
    out: Path,
    metrics: Path | None = None,
) -> list[Path]:
    """Curves, tests, figures and the section text of the robustness analysis; ``metrics``:
    where the DVC metrics go (each curve's change from its first to its last level and the
    mean change from clean over the corruptions, per method)."""
    from spt.harness.corruptions import parse_corruption
    from spt.harness.robustness import (
        CLEAN,
        IMAGES_FOLDER,
        PROMPT_CURVES,
        PROMPTS_FOLDER,
        prompt_points,
    )

    records = read_tree(root, backbone)
    where = records["_path"].str.split("/")
    is_prompts = where.map(lambda p: p[-1] == PROMPTS_FOLDER)
    is_images = where.map(lambda p: len(p) >= 2 and p[-2] == IMAGES_FOLDER)
    order = method_order(records["method"].unique(), settings.reference)
    out.mkdir(parents=True, exist_ok=True)
    produced: list[Path] = []

    # prompts: one row per curve point
    prompts = records[is_prompts]
    points = pd.DataFrame([vars(p) for p in prompt_points(section)])
    # each distinct prompt once (curves share their clean level), then laid out per curve
    mode_records = prompts[prompts["prompt_mode"].isin(points["mode"])]
    mode_records = mode_records.assign(mode=mode_records["prompt_mode"])
    mode_table = point_rows(mode_records, ["mode"], settings)
    mode_tests = paired_tests(mode_records, ["mode"], settings)
    # images: severity 0 is the clean run
    images = records[is_images].copy()
    images["corruption"] = where[is_images].map(lambda p: p[-1])
    clean = images[images["corruption"] == CLEAN]
    corrupted = images[images["corruption"] != CLEAN].copy()
    labels = {}
    for label, folder in (
        corrupted[["corruption", "_path"]].drop_duplicates("corruption").to_numpy()
    ):
        try:
            labels[label] = parse_corruption(label)
        except SuiteError as exc:
            raise SuiteError(
                f"{Path(root) / folder}: not a corruption folder ({exc}); move it away or rerun "
                "`spt robustness`"
            ) from None
    corrupted["name"] = corrupted["corruption"].map(lambda label: labels[label][0])
    corrupted["severity"] = corrupted["corruption"].map(lambda label: labels[label][1])
    on = ["method", "image_id", "seed", "prompt_mode", "dataset"]
    changes = change_records(corrupted, clean, on)
    level_table = point_rows(corrupted, ["prompt_mode", "name", "severity"], settings)
    clean_rows = point_rows(clean, ["prompt_mode"], settings)
    change_table = point_rows(changes, ["prompt_mode", "name", "severity"], settings)
    change_tests = paired_tests(changes, ["prompt_mode", "name", "severity"], settings)
    # one Holm family for the whole analysis
    both = pd.concat([mode_tests.assign(part="prompts"), change_tests.assign(part="images")])
    if not both.empty:
        both["p_holm"] = holm_adjust(both["p_value"].astype(float))
        both["verdict"] = [
            verdict(p, d, settings.alpha)
            for p, d in zip(both["p_holm"], both["mean_diff"], strict=True)
        ]
        mode_tests = both[both["part"] == "prompts"].drop(columns="part")
        change_tests = both[both["part"] == "images"].drop(columns="part")
    curve_table = points.merge(mode_table, on="mode")
    curve_tests = points.merge(mode_tests, on="mode") if not mode_tests.empty else mode_tests
    image_table = level_table.merge(
        change_table[
            ["prompt_mode", "name", "severity", "method", "mean", "ci_low", "ci_high"]
        ].rename(
            columns={"mean": "change", "ci_low": "change_ci_low", "ci_high": "change_ci_high"}
        ),
        on=["prompt_mode", "name", "severity", "method"],
    )

    produced.append(write_text(out, "robustness_prompts.csv", curve_table.to_csv(index=False)))
    produced.append(write_text(out, "robustness_images.csv", image_table.to_csv(index=False)))
    produced.append(write_text(out, "robustness_significance.csv",
                           both.to_csv(index=False) if not both.empty else ""))  # fmt: skip
    panels = [(curve, PROMPT_CURVES[curve], curve_table[curve_table["curve"] == curve])
              for curve in dict.fromkeys(points["curve"])]  # fmt: skip
    produced.append(line_figure(panels, "level", order, out / "robustness_prompts.png"))
    image_panels = []
    for (mode, name), rows in level_table.groupby(["prompt_mode", "name"], sort=False):
        zero = clean_rows[clean_rows["prompt_mode"] == mode].assign(severity=0)
        image_panels.append((f"{name} ({mode})", "severity (0 = clean)", pd.concat([zero, rows])))
    if image_panels:
        produced.append(line_figure(image_panels, "severity", order, out / "robustness_images.png"))

    # reading
    lines = [f"# Robustness ({backbone})", ""]
    lines += [
        "Prompt perturbations are scored on clean images, corruptions with clean prompts; every "
        "perturbation is a pure function of (seed, image id, level), so all methods meet the "
        f"same ones. Mean IoU over {int(curve_table['n_images'].max()) if len(curve_table) else 0} "
        "test images pooled over datasets, 95% bootstrap intervals; paired tests "
        f"{settings.reference} against each method, Holm over all {len(both)} comparisons (the "
        "clean level that several curves share is one prompt, scored and tested once).",
        "",
        "## Prompt robustness",
        "",
        "![prompt robustness](robustness_prompts.png)",
        "",
    ]
    reading = [change_sentence(curve_table[curve_table["curve"] == c], "level", order, c)
               for c in dict.fromkeys(points["curve"])]  # fmt: skip
    lines += [
        "**Reading.** "
        + " ".join(r for r in reading if r)
        + " Against the others, "
        + verdict_counts(mode_tests, settings.reference)
        + ".",
        "",
        "Mean IoU [95% CI] per curve and level (`robustness_prompts.csv` has the counts):",
        "",
        pivot_markdown(curve_table, ["curve", "level"], order, "curve level"),
        "",
        "## Image robustness",
        "",
        "![image robustness](robustness_images.png)",
        "",
    ]
    mean_change = change_table.groupby("method")["mean"].mean()
    if not mean_change.empty:
        least = mean_change.idxmax()
        text = ", ".join(f"{m} {mean_change[m]:+.3f}" for m in order if m in mean_change)
        lines += [
            f"**Reading.** Mean change of IoU from clean over every corruption and severity: {text}; "
            f"{least} degrades least. Comparing each method's change with {settings.reference}'s, "
            + verdict_counts(change_tests, settings.reference)
            + ".",
            "",
        ]
    lines += [
        "Change of IoU from clean [95% CI] per corruption and severity (clean mean IoU: "
        + ", ".join(f"{r.method} {r.mean:.3f}" for r in clean_rows.itertuples())
        + "):",
        "",
        pivot_markdown(
            image_table,
            ["prompt_mode", "name", "severity"],
            order,
            "mode corruption severity",
            ("change", "change_ci_low", "change_ci_high"),
        ),  # fmt: skip
        "",
        "## Paired tests",
        "",
        "Prompt levels (difference of IoU):",
        "",
        tests_markdown(curve_tests, ["curve", "level"], "curve level"),
        "",
        "Corruptions (difference of the change from clean; > 0: the reference degrades less):",
        "",
        tests_markdown(
            change_tests, ["prompt_mode", "name", "severity"], "mode corruption severity"
        ),
    ]
    produced.append(write_text(out, "robustness.md", "\n".join(lines) + "\n"))
    values = {}
    for (curve, method), line in curve_table.groupby(["curve", "method"], sort=False):
        line = line.sort_values("level")
        if len(line) >= 2:
            values[f"{curve}.{method}.change"] = line["mean"].iloc[-1] - line["mean"].iloc[0]
    for method, change in mean_change.items():
        values[f"corruptions.{method}.change"] = change
    return produced + write_metrics(metrics, values)
