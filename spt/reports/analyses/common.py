"""What the analyses beyond the anchors share (docs/analyses.md): reading their records, the
curve points and paired tests, the markdown and the line figures.

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

import json
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


def path_value(paths: pd.Series, pattern: str, what: str, root: Path) -> pd.Series:
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


def key_text(values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def interval(mean: float, low: float, high: float) -> str:
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
    cells = table.assign(_cell=[interval(*row) for row in table[list(value)].to_numpy(dtype=float)])
    wide = cells.pivot_table(
        index=keys, columns="method", values="_cell", aggfunc="first", sort=False
    )
    wide = wide[[m for m in order if m in wide.columns]].fillna("–")
    wide.index = [key_text(index) for index in wide.index]
    wide.index.name = title
    wide.columns.name = None
    return markdown(wide)


def tests_markdown(tests: pd.DataFrame, keys: list[str], title: str) -> str:
    """One row per test: difference with its CI, Holm-adjusted p, verdict."""
    if tests.empty:
        return "_No paired tests (only one method evaluated)._\n"
    rows = {}
    for _, row in tests.iterrows():
        label = key_text(tuple(row[k] for k in keys)) + f" vs {row['baseline']}"
        p = float(row["p_holm"])
        rows[label] = {
            "pairs": str(int(row["n_pairs"])),
            "difference [95% CI]": interval(row["mean_diff"], row["ci_low"], row["ci_high"]),
            "p (Holm)": "n/a" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}"),
            "verdict": str(row["verdict"]),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = title
    return markdown(frame)


def verdict_counts(tests: pd.DataFrame, reference: str) -> str:
    """'after Holm over its N tests, <reference> is significantly better at ...'."""
    if tests.empty:
        return "no paired tests were possible"
    counts = tests["verdict"].value_counts()
    tested = int(tests["p_holm"].notna().sum())
    better, worse = int(counts.get("better", 0)), int(counts.get("worse", 0))
    untested = len(tests) - tested
    return (
        f"after Holm over {plural(tested, 'test')}, {reference} is significantly better in "
        f"{better}, significantly worse in {worse} and not significantly different in "
        f"{tested - better - worse}"
        + (f" ({plural(untested, 'comparison')} had too few pairs to test)" if untested else "")
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def write_metrics(path: Path | None, values: dict[str, float]) -> list[Path]:
    """The analysis's DVC metrics file (flat dotted keys, sorted, 6 decimals; NaN left out), for
    `dvc metrics show` and `dvc exp show`; nothing when ``path`` is None."""
    if path is None:
        return []
    kept = {k: round(float(v), 6) for k, v in sorted(values.items()) if np.isfinite(v)}
    path = Path(path)
    return [write_text(path.parent, path.name, json.dumps(kept, indent=2) + "\n")]


def write_text(out: Path, name: str, text: str) -> Path:
    from spt.artifacts import write_text_atomically

    path = out / name
    write_text_atomically(path, text)
    return path


def line_figure(panels: list[tuple[str, str, pd.DataFrame]], x: str, order: list[str],
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


def change_sentence(rows: pd.DataFrame, x: str, order: list[str], what: str) -> str:
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
