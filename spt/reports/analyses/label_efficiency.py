"""The label-efficiency section: IoU against defect images per category (docs/analyses.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from spt.reports.analyses.common import (
    ALL_IMAGES,
    FINAL_STAGE,
    ZERO_SHOT,
    StatsSettings,
    change_sentence,
    line_figure,
    method_order,
    paired_tests,
    path_value,
    pivot_markdown,
    point_rows,
    read_tree,
    tests_markdown,
    verdict_counts,
    write_metrics,
    write_text,
)


def _training_counts(train_root: Path, backbone: str) -> pd.DataFrame:
    """Images each training run used (``training_images.csv``), per (path, method)."""
    rows = []
    for path in (
        sorted(Path(train_root).rglob("training_images.csv")) if Path(train_root).is_dir() else []
    ):
        if path.parent.name != backbone:
            continue
        count = len(pd.read_csv(path, dtype=str, keep_default_na=False))
        rows.append({"run": path.parent.parent.parent.relative_to(train_root).as_posix(),
                     "method": path.parent.parent.name, "train_images": count})  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "method", "train_images"])


def label_efficiency_report(
    root: Path, eval_root: Path, train_roots: tuple[Path, Path], section, backbone: str,
    settings: StatsSettings, out: Path, metrics: Path | None = None,
) -> list[Path]:  # fmt: skip
    """Curves of IoU against labelled images per category; ``all`` is the main run.
    ``metrics``: where the DVC metrics go (mean IoU per prompt mode, k and method)."""
    from spt.reports.pipeline_report import load_records

    subset = read_tree(root, backbone)
    subset["k"] = path_value(subset["_path"], r"k([0-9]+)", "k<K>", root)
    main = load_records(eval_root)
    main = main[(main["backbone"] == backbone) & (main["stage"] == FINAL_STAGE)]
    modes = list(section.prompt_modes)
    methods = list(section.methods)
    full = main[main["method"].isin(methods) & main["prompt_mode"].isin(modes)].assign(k=ALL_IMAGES)
    zero = main[(main["method"] == ZERO_SHOT) & main["prompt_mode"].isin(modes)]
    records = pd.concat([subset.drop(columns="_path"), full], ignore_index=True)
    k_values = sorted({int(k) for k in subset["k"]})
    positions = {str(k): i for i, k in enumerate(k_values)} | {ALL_IMAGES: len(k_values)}
    records["x"] = records["k"].map(positions)
    table = point_rows(records, ["prompt_mode", "k", "x"], settings).sort_values(
        ["prompt_mode", "x"]
    )
    tests = paired_tests(records, ["prompt_mode", "k"], settings)
    counts = pd.concat(
        [_training_counts(train_roots[0], backbone), _training_counts(train_roots[1], backbone)]
    )
    if not counts.empty:
        counts["k"] = [
            m.group(1) if (m := re.search(r"(?:^|/)k([0-9]+)$", r)) else ALL_IMAGES
            for r in counts["run"]
        ]
        mean_counts = counts.groupby(["k", "method"])["train_images"].mean().reset_index()
        table = table.merge(mean_counts, on=["k", "method"], how="left")
    order = method_order(records["method"].unique(), settings.reference)
    out.mkdir(parents=True, exist_ok=True)
    produced = [write_text(out, "label_efficiency.csv", table.to_csv(index=False)),
                write_text(out, "label_efficiency_significance.csv", tests.to_csv(index=False))]  # fmt: skip
    ticks = {i: str(k) for i, k in enumerate(k_values)} | {len(k_values): "all"}
    panels = []
    for mode in modes:
        rows = table[table["prompt_mode"] == mode]
        zero_rows = point_rows(zero[zero["prompt_mode"] == mode], ["prompt_mode"], settings)
        if not zero_rows.empty:  # zero-shot needs no labels: a flat line
            rows = pd.concat([rows, pd.concat([zero_rows.assign(x=x) for x in ticks])])
        panels.append((f"prompt {mode}", "defect images per category", rows))
    order_zero = method_order(
        [*order, *([ZERO_SHOT] if not zero.empty else [])], settings.reference
    )
    produced.append(line_figure(panels, "x", order_zero, out / "label_efficiency.png", ticks))
    reading = [change_sentence(table[table["prompt_mode"] == mode], "x", order,
                                f"{mode} prompts, gain from k = {k_values[0]} to all") for mode in modes]  # fmt: skip
    seeds = int(table["n_seeds"].max()) if len(table) else 0
    lines = [
        f"# Label efficiency ({backbone})",
        "",
        f"Every method in {', '.join(methods)} trained on k defect images per (dataset, category) "
        f"(k = {', '.join(map(str, k_values))}; the k sets are nested) and on all of them (the main "
        f"training run), same recipe and test set; {seeds} seed(s). Zero-shot needs no labels. "
        "Mean IoU over the pooled test images with 95% bootstrap intervals; `seed_sd` is the "
        "spread over seeds.",
        "",
        "![label efficiency](label_efficiency.png)",
        "",
        "**Reading.** "
        + " ".join(r for r in reading if r)
        + f" Against the others, {verdict_counts(tests, settings.reference)}.",
        "",
        "Mean IoU [95% CI] (`label_efficiency.csv` adds the seed spread and training images):",
        "",
        pivot_markdown(table, ["prompt_mode", "k"], order, "mode k"),
        "",
        "## Paired tests",
        "",
        tests_markdown(tests, ["prompt_mode", "k"], "mode k"),
    ]
    produced.append(write_text(out, "label_efficiency.md", "\n".join(lines) + "\n"))
    values = {
        f"{row.prompt_mode}.k{row.k}.{row.method}.iou": row.mean for row in table.itertuples()
    }
    return produced + write_metrics(metrics, values)
