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
    ]
    placement = _click_placement(Path(root), records[is_prompts])
    if placement is not None:
        produced.append(write_text(out, "robustness_clicks.csv", placement.to_csv(index=False)))
        lines += [_placement_sentence(placement), ""]
    lines += [
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


def _click_placement(root: Path, prompt_records: pd.DataFrame) -> pd.DataFrame | None:
    """Per displaced-click mode: images, positive clicks, those outside the defect and their
    share, from every method's ``prompts/click_placement.csv`` (identical for all methods: the
    prompts are theirs alike, or the analysis would compare unlike things). None when no method
    folder has one (a run before the file existed)."""
    from spt.config.modes import split_mode
    from spt.harness.robustness import PLACEMENT_COLUMNS, PLACEMENT_FILE

    paths = [root / folder / PLACEMENT_FILE for folder in sorted(prompt_records["_path"].unique())]
    present = [path for path in paths if path.is_file()]
    if not present:
        return None
    if len(present) < len(paths):
        absent = next(path for path in paths if not path.is_file())
        raise SuiteError(
            f"{absent}: missing, while {present[0]} exists; rerun `spt robustness` for that "
            "method (it rewrites the file without re-scoring finished chunks)"
        )
    tables = {}
    for path in present:
        try:
            table = pd.read_csv(path, dtype={"dataset": str, "image_id": str, "prompt_mode": str})
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise SuiteError(f"{path}: unreadable ({exc}); rerun `spt robustness`") from None
        if list(table.columns) != PLACEMENT_COLUMNS:
            raise SuiteError(
                f"{path}: columns {list(table.columns)}, expected {PLACEMENT_COLUMNS}; rerun "
                "`spt robustness`"
            )
        tables[path] = table
    first = present[0]
    for path in present[1:]:
        if not tables[path].equals(tables[first]):
            raise SuiteError(
                f"{path} and {first} differ: the two methods met other clicks (other seed, "
                "datasets or input protocol); rerun `spt robustness` for both with one params.yaml"
            )
    table = tables[first]
    rows = []
    for mode, group in table.groupby("prompt_mode", sort=False):
        clicks, outside = int(group["clicks"].sum()), int(group["outside"].sum())
        rows.append({
            "prompt_mode": mode,
            "level": split_mode(mode)[2],
            "images": len(group),
            "clicks": clicks,
            "outside": outside,
            "share_outside": outside / clicks if clicks else float("nan"),
            "images_with_outside": int((group["outside"] > 0).sum()),
        })  # fmt: skip
    return pd.DataFrame(rows).sort_values("level", kind="stable").reset_index(drop=True)


def _placement_sentence(placement: pd.DataFrame) -> str:
    parts = [
        f"{row.level:g} px: {row.share_outside:.1%} of {row.clicks} ({row.images_with_outside} "
        f"of {row.images} images have one)"
        for row in placement.itertuples()
    ]
    return (
        "Displaced clicks that left the defect, still labelled positive (part of what the "
        "displacement curve measures; `robustness_clicks.csv`): " + "; ".join(parts) + "."
    )
