"""The analyses beyond the anchors (docs/analyses.md): robustness curves, label efficiency and
leave-one-dataset-out transfer, each turned into a table, a figure, paired tests and a short
plain reading.

Shared conventions:

* Only each method's final output is used (SPT's draft is a means, not a result).
* A point of a curve is the mean IoU over the test images of every evaluated dataset pooled
  (each image's value averaged over seeds first), with the percentile bootstrap interval of that
  mean over images. This pools images, unlike the main tables' unweighted mean over datasets:
  at a few levels per curve the per-dataset means would be too noisy to read.
* Paired tests are those of the main report (:mod:`spt.reports.paired_stats`): per image,
  Wilcoxon signed-rank on the differences, bootstrap CI of the mean difference, rank-biserial
  effect size. The Holm family is every test of one analysis.
* ``seed_sd``: the standard deviation over seeds of the pooled per-seed means (0 with one seed).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spt.errors import SuiteError
from spt.harness.aggregate import scorable
from spt.harness.records import STATUS_NO_PROMPT, STATUS_OK, read_records
from spt.reports.figures import bootstrap_replicates, save_figure
from spt.reports.paired_stats import holm_adjust, verdict
from spt.reports.pairing import pair_records
from spt.reports.render import markdown
from spt.reports.stats import test_paired_sample

matplotlib.use("Agg")

ANALYSES = ("robustness", "label_efficiency", "transfer")
RECORDS_FILE = "records.parquet"
FINAL_STAGE = "final"
ZERO_SHOT = "zero_shot"
ALL_IMAGES = "all"  # the k of the main training run (every training image)
METRIC = "iou"
TEST_COLUMNS = [
    "reference", "baseline", "n_pairs", "mean_ref", "mean_base", "mean_diff", "ci_low",
    "ci_high", "p_value", "p_holm", "rank_biserial", "verdict", "note",
]  # fmt: skip


@dataclass(frozen=True)
class StatsSettings:
    """How the analyses' intervals and tests are computed (params ``report.*``)."""

    reference: str = "spt"
    seed: int = 0
    n_boot: int = 2_000
    alpha: float = 0.05
    min_pairs: int = 6


# --- reading records ---------------------------------------------------------------------------


def read_tree(root: Path, backbone: str) -> pd.DataFrame:
    """Every records file below ``root`` whose records are of ``backbone``, with a ``_path``
    column (the folder, relative to ``root``); only final-stage records."""
    root = Path(root)
    files = sorted(root.rglob(RECORDS_FILE)) if root.is_dir() else []
    parts = []
    for path in files:
        if "parts" in path.relative_to(root).parts:
            continue  # resumable chunks, merged into the folder's own records file
        records = read_records(path)
        records = records[(records["backbone"] == backbone) & (records["stage"] == FINAL_STAGE)]
        if not records.empty:
            parts.append(records.assign(_path=path.parent.relative_to(root).as_posix()))
    if not parts:
        raise SuiteError(
            f"{root}: no {backbone} {RECORDS_FILE} below it; run the analysis's stages first "
            "(`dvc repro`, docs/analyses.md)"
        )
    return pd.concat(parts, ignore_index=True)


def _path_value(paths: pd.Series, pattern: str, what: str, root: Path) -> pd.Series:
    regex = re.compile(pattern)
    found = []
    for path in paths:
        match = next((regex.fullmatch(p) for p in path.split("/") if regex.fullmatch(p)), None)
        if match is None:
            raise SuiteError(f"{root}/{path}: no {what} folder in the path ({pattern})")
        found.append(match.group(1))
    return pd.Series(found, index=paths.index)


def method_order(methods: Sequence[str], reference: str) -> list[str]:
    """Zero-shot first, the other baselines by name, the reference last."""
    names = sorted(set(methods), key=str)
    first = [m for m in names if m == ZERO_SHOT and m != reference]
    last = [m for m in names if m == reference]
    return first + [m for m in names if m not in first and m not in last] + last


# --- statistics ------------------------------------------------------------------------------


def _rng(seed: int, key: tuple) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("|".join(map(str, key)).encode())])


def point_rows(
    records: pd.DataFrame, keys: list[str], settings: StatsSettings, metric: str = METRIC
) -> pd.DataFrame:
    """One row per group of ``keys`` + method: images, no-prompt count, mean with its bootstrap
    interval (images resampled), seeds and the spread over seeds."""
    rows = []
    for key, group in records.groupby([*keys, "method"], sort=False, dropna=False):
        ok = group[scorable(group, metric)]
        per_image = ok.groupby("image_id")[metric].mean().to_numpy(dtype=float)
        per_seed = ok.groupby("seed")[metric].mean().to_numpy(dtype=float)
        row = dict(zip([*keys, "method"], key, strict=True))
        row["n_images"] = int(per_image.size)
        row["n_no_prompt"] = int(
            group.loc[group["status"] == STATUS_NO_PROMPT, "image_id"].nunique()
        )
        row["mean"] = float(per_image.mean()) if per_image.size else np.nan
        if per_image.size:
            replicates = bootstrap_replicates(per_image, _rng(settings.seed, key), settings.n_boot)
            row["ci_low"], row["ci_high"] = np.percentile(replicates, [2.5, 97.5])
        else:
            row["ci_low"] = row["ci_high"] = np.nan
        row["n_seeds"] = int(per_seed.size)
        row["seed_sd"] = float(per_seed.std(ddof=1)) if per_seed.size > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def paired_tests(
    records: pd.DataFrame,
    keys: list[str],
    settings: StatsSettings,
    *,
    reference: str | None = None,
    metric: str = METRIC,
) -> pd.DataFrame:
    """The reference against every other method within each group of ``keys`` (records pair
    on image and seed). Returns the key columns plus :data:`TEST_COLUMNS`, Holm over the rows."""
    reference = settings.reference if reference is None else reference
    rows = []
    for key, group in records.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ref = group[group["method"] == reference]
        if ref.empty:
            continue
        for baseline in method_order(group["method"].unique(), reference):
            if baseline == reference:
                continue
            sample = pair_records(ref, group[group["method"] == baseline], metric)
            row = dict(zip(keys, key, strict=True))
            row |= {"reference": reference, "baseline": baseline, "n_pairs": sample.n_pairs}
            row |= test_paired_sample(
                sample, (*key, reference, baseline), settings.seed, settings.n_boot, 0.95,
                settings.min_pairs,
            )  # fmt: skip
            rows.append(row)
    table = pd.DataFrame(rows, columns=[*keys, *TEST_COLUMNS])
    if table.empty:
        return table
    table["p_holm"] = holm_adjust(table["p_value"].astype(float))
    table["verdict"] = [
        verdict(p, d, settings.alpha)
        for p, d in zip(table["p_holm"], table["mean_diff"], strict=True)
    ]
    return table[[*keys, *TEST_COLUMNS]]


def change_records(
    changed: pd.DataFrame, clean: pd.DataFrame, on: list[str], metric: str = METRIC
) -> pd.DataFrame:
    """``changed`` with ``metric`` replaced by its per-image change from ``clean`` (changed -
    clean, paired on ``on``); a pair where either side is unscorable has status no_prompt."""
    base = clean[[*on, metric, "status"]].rename(columns={metric: "_clean", "status": "_status"})
    merged = changed.merge(base, on=on, how="inner", validate="many_to_one")
    both = scorable(merged, metric) & (merged["_status"] == STATUS_OK)
    merged[metric] = (merged[metric] - merged["_clean"]).where(both)
    merged["status"] = np.where(both, STATUS_OK, STATUS_NO_PROMPT)
    return merged.drop(columns=["_clean", "_status"])


# --- text ------------------------------------------------------------------------------------


def _key_text(values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _interval(mean: float, low: float, high: float) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{mean:.3f}"


def pivot_markdown(
    table: pd.DataFrame, keys: list[str], order: list[str], title: str,
    value: tuple[str, str, str] = ("mean", "ci_low", "ci_high"),
) -> str:  # fmt: skip
    """Rows = the ``keys`` values, one column per method: ``mean [ci_low, ci_high]``."""
    if table.empty:
        return "_No rows._\n"
    cells = table.assign(
        _cell=[_interval(*row) for row in table[list(value)].to_numpy(dtype=float)]
    )
    wide = cells.pivot_table(
        index=keys, columns="method", values="_cell", aggfunc="first", sort=False
    )
    wide = wide[[m for m in order if m in wide.columns]].fillna("–")
    wide.index = [_key_text(index) for index in wide.index]
    wide.index.name = title
    wide.columns.name = None
    return markdown(wide)


def _tests_markdown(tests: pd.DataFrame, keys: list[str], title: str) -> str:
    """One row per test: difference with its CI, Holm-adjusted p, verdict."""
    if tests.empty:
        return "_No paired tests (only one method evaluated)._\n"
    rows = {}
    for _, row in tests.iterrows():
        label = _key_text(tuple(row[k] for k in keys)) + f" vs {row['baseline']}"
        p = float(row["p_holm"])
        rows[label] = {
            "pairs": str(int(row["n_pairs"])),
            "difference [95% CI]": _interval(row["mean_diff"], row["ci_low"], row["ci_high"]),
            "p (Holm)": "n/a" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}"),
            "verdict": str(row["verdict"]),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = title
    return markdown(frame)


def _verdict_counts(tests: pd.DataFrame, reference: str) -> str:
    if tests.empty:
        return "no paired tests were possible"
    counts = tests["verdict"].value_counts()
    tested = int(tests["p_holm"].notna().sum())
    better, worse = int(counts.get("better", 0)), int(counts.get("worse", 0))
    return (
        f"after Holm over its {tested} tests, {reference} is significantly better at {better}, "
        f"significantly worse at {worse}, and not significantly different at {tested - better - worse}"
        + (
            f" ({len(tests) - tested} comparisons had too few pairs to test)"
            if len(tests) > tested
            else ""
        )
    )


def _write(out: Path, name: str, text: str) -> Path:
    from spt.artifacts import write_text_atomically

    path = out / name
    write_text_atomically(path, text)
    return path


def _line_figure(panels: list[tuple[str, str, pd.DataFrame]], x: str, order: list[str],
                 path: Path, x_ticks: dict | None = None) -> Path:  # fmt: skip
    """One panel per (title, x label, rows): mean with its interval per method against ``x``."""
    columns = min(3, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    fig = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, (title, label, data) in zip(axes, panels, strict=False):
        for method in order:
            line = data[data["method"] == method].sort_values(x)
            if line.empty:
                continue
            colour = f"C{order.index(method) % 10}"  # one colour per method in every panel
            ax.plot(line[x], line["mean"], marker="o", label=method, color=colour)
            ax.fill_between(line[x].to_numpy(float), line["ci_low"].to_numpy(float),
                            line["ci_high"].to_numpy(float), alpha=0.12, color=colour)  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(label)
        ax.set_ylabel("mean IoU")
        if x_ticks:
            ax.set_xticks(list(x_ticks), list(x_ticks.values()))
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    axes[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)
    return path


def _change_sentence(rows: pd.DataFrame, x: str, order: list[str], what: str) -> str:
    """Each method's change of mean IoU between a curve's first and last level, and which
    keeps most / least of its quality."""
    changes = {}
    for method in order:
        line = rows[rows["method"] == method].sort_values(x)
        if len(line) >= 2:
            changes[method] = float(line["mean"].iloc[-1] - line["mean"].iloc[0])
    if not changes:
        return ""
    text = ", ".join(f"{m} {v:+.3f}" for m, v in changes.items())
    if len(changes) == 1:
        return f"{what}: {text}."
    best, worst = max(changes, key=changes.get), min(changes, key=changes.get)
    return f"{what}: {text} (best {best}, worst {worst})."


# --- robustness ------------------------------------------------------------------------------


def robustness_report(
    root: Path, section, backbone: str, settings: StatsSettings, out: Path
) -> list[Path]:
    """Curves, tests, figures and the section text of the robustness analysis."""
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
    curve_records = prompts.merge(points, left_on="prompt_mode", right_on="mode")
    curve_table = point_rows(curve_records, ["curve", "level", "mode"], settings)
    curve_tests = paired_tests(curve_records, ["curve", "level", "mode"], settings)
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
    both = pd.concat([curve_tests.assign(part="prompts"), change_tests.assign(part="images")])
    if not both.empty:
        both["p_holm"] = holm_adjust(both["p_value"].astype(float))
        both["verdict"] = [
            verdict(p, d, settings.alpha)
            for p, d in zip(both["p_holm"], both["mean_diff"], strict=True)
        ]
        curve_tests = both[both["part"] == "prompts"].drop(columns="part")
        change_tests = both[both["part"] == "images"].drop(columns="part")
    image_table = level_table.merge(
        change_table[
            ["prompt_mode", "name", "severity", "method", "mean", "ci_low", "ci_high"]
        ].rename(
            columns={"mean": "change", "ci_low": "change_ci_low", "ci_high": "change_ci_high"}
        ),
        on=["prompt_mode", "name", "severity", "method"],
    )

    produced.append(_write(out, "robustness_prompts.csv", curve_table.to_csv(index=False)))
    produced.append(_write(out, "robustness_images.csv", image_table.to_csv(index=False)))
    produced.append(_write(out, "robustness_significance.csv",
                           both.to_csv(index=False) if not both.empty else ""))  # fmt: skip
    panels = [(curve, PROMPT_CURVES[curve], curve_table[curve_table["curve"] == curve])
              for curve in dict.fromkeys(points["curve"])]  # fmt: skip
    produced.append(_line_figure(panels, "level", order, out / "robustness_prompts.png"))
    image_panels = []
    for (mode, name), rows in level_table.groupby(["prompt_mode", "name"], sort=False):
        zero = clean_rows[clean_rows["prompt_mode"] == mode].assign(severity=0)
        image_panels.append((f"{name} ({mode})", "severity (0 = clean)", pd.concat([zero, rows])))
    if image_panels:
        produced.append(
            _line_figure(image_panels, "severity", order, out / "robustness_images.png")
        )

    # reading
    lines = [f"# Robustness ({backbone})", ""]
    lines += [
        "Prompt perturbations are scored on clean images, corruptions with clean prompts; every "
        "perturbation is a pure function of (seed, image id, level), so all methods meet the "
        f"same ones. Mean IoU over {int(curve_table['n_images'].max()) if len(curve_table) else 0} "
        "test images pooled over datasets, 95% bootstrap intervals; paired tests "
        f"{settings.reference} against each method, Holm over all {len(both)} comparisons.",
        "",
        "## Prompt robustness",
        "",
        "![prompt robustness](robustness_prompts.png)",
        "",
    ]
    reading = [_change_sentence(curve_table[curve_table["curve"] == c], "level", order, c)
               for c in dict.fromkeys(points["curve"])]  # fmt: skip
    lines += [
        "**Reading.** "
        + " ".join(r for r in reading if r)
        + " Against the others, "
        + _verdict_counts(curve_tests, settings.reference)
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
            + _verdict_counts(change_tests, settings.reference)
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
        _tests_markdown(curve_tests, ["curve", "level"], "curve level"),
        "",
        "Corruptions (difference of the change from clean; > 0: the reference degrades less):",
        "",
        _tests_markdown(
            change_tests, ["prompt_mode", "name", "severity"], "mode corruption severity"
        ),
    ]
    produced.append(_write(out, "robustness.md", "\n".join(lines) + "\n"))
    return produced


# --- label efficiency ------------------------------------------------------------------------


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
    settings: StatsSettings, out: Path,
) -> list[Path]:  # fmt: skip
    """Curves of IoU against labelled images per category; ``all`` is the main run."""
    from spt.reports.pipeline_report import load_records

    subset = read_tree(root, backbone)
    subset["k"] = _path_value(subset["_path"], r"k([0-9]+)", "k<K>", root)
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
    produced = [_write(out, "label_efficiency.csv", table.to_csv(index=False)),
                _write(out, "label_efficiency_significance.csv", tests.to_csv(index=False))]  # fmt: skip
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
    produced.append(_line_figure(panels, "x", order_zero, out / "label_efficiency.png", ticks))
    reading = [_change_sentence(table[table["prompt_mode"] == mode], "x", order,
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
        + f" Against the others, {_verdict_counts(tests, settings.reference)}.",
        "",
        "Mean IoU [95% CI] (`label_efficiency.csv` adds the seed spread and training images):",
        "",
        pivot_markdown(table, ["prompt_mode", "k"], order, "mode k"),
        "",
        "## Paired tests",
        "",
        _tests_markdown(tests, ["prompt_mode", "k"], "mode k"),
    ]
    produced.append(_write(out, "label_efficiency.md", "\n".join(lines) + "\n"))
    return produced


# --- transfer --------------------------------------------------------------------------------


def transfer_report(
    root: Path, eval_root: Path, section, backbone: str, settings: StatsSettings, out: Path
) -> list[Path]:
    """In-domain against held-out IoU per method and held-out dataset."""
    from spt.reports.pipeline_report import load_records

    held = read_tree(root, backbone)
    held["held_out"] = _path_value(held["_path"], r"without_(.+)", "without_<dataset>", root)
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
    produced = [_write(out, "transfer.csv", table.to_csv(index=False)),
                _write(out, "transfer_significance.csv", family.to_csv(index=False))]  # fmt: skip
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
        f"**Reading.** Mean change of IoU when the dataset is held out: {text}; {best} transfers "
        f"best. On the held-out data, {_verdict_counts(family[family['part'] == 'reference'], settings.reference)}.",
        "",
        markdown(_transfer_cells(table, keys)),
        "",
        "## Paired tests",
        "",
        "Held-out against in-domain, per method (reference = held-out):",
        "",
        _tests_markdown(_gap_rows(family), keys, "mode dataset"),
        "",
        f"{settings.reference} against each method on the held-out data:",
        "",
        _tests_markdown(family[family["part"] == "reference"], keys, "mode dataset"),
    ]
    produced.append(_write(out, "transfer.md", "\n".join(lines) + "\n"))
    return produced


def _gap_rows(family: pd.DataFrame) -> pd.DataFrame:
    """The gap tests with the method as the compared column (their reference is held-out)."""
    gaps = family[family["part"] == "gap"] if not family.empty else family
    return gaps.assign(baseline=gaps["owner"] + " in-domain") if not gaps.empty else gaps


def _transfer_cells(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per (mode, dataset, method): in-domain, held-out, change, its Holm p."""
    rows = {}
    for _, row in table.iterrows():
        label = _key_text(tuple(row[k] for k in keys)) + f" {row['method']}"
        p = float(row.get("gap_p_holm", np.nan))
        rows[label] = {
            "in-domain [95% CI]": _interval(row["in_domain"], row["in_ci_low"], row["in_ci_high"]),
            "held-out [95% CI]": _interval(
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
