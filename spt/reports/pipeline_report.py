"""The report stage of the pipeline: every table, test and figure from the evaluation outputs.

:func:`build_report` reads ``<eval_root>/<method>/<backbone>/records.parquet`` (and the
``examples.npz`` beside it) and writes under ``out``:

* ``tables/metrics_<backbone>_<prompt mode>.{md,tex,csv}``: mean IoU and boundary IoU per
  method and dataset, the unweighted mean over datasets, trainable parameters, dropped records;
* ``tables/defect_types_<backbone>.{md,csv}``: mean IoU per defect type and method (box
  prompts), for the datasets with several defect types;
* ``significance.{md,json}``: the reference method's final output against every other method,
  per backbone, prompt mode and dataset; a reference with other stages (SPT's draft) is also
  compared with each of them, as a baseline named ``<reference> (<stage>)``;
* ``tables/cost_<backbone>.{md,csv}``: per method, trainable parameters, training seconds per
  step and epoch, evaluation seconds per image and prompt, peak memory, device and precision,
  gathered from the training and evaluation logs (:mod:`spt.reports.cost`);
* ``seed_spread.csv``: the spread of each dataset mean over seeds, when records hold several;
* ``figures/bars_<backbone>_<prompt mode>.png``: IoU bars with bootstrap CIs;
* ``figures/overlay_<backbone>_<dataset>.png``: image, ground truth and every method's box-prompt
  mask for the example images all methods kept;
* ``README.md``: an index of those files and the headline table (mean IoU over datasets, box).

Text outputs depend on the inputs and settings only, so a rerun gives identical bytes.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spt.artifacts import folder_lock, read_examples, read_trained, write_text_atomically
from spt.data.images import read_mask, read_rgb
from spt.data.manifest import find_manifest, read_manifest, resolve_manifest_path
from spt.errors import SuiteError
from spt.harness.aggregate import scorable
from spt.harness.records import check_names, check_unique, read_numerics, read_records
from spt.numerics import summary_line
from spt.reports.aggregate import MEAN_OVER_DATASETS, seed_spread
from spt.reports.cost import cost_markdown, cost_rows
from spt.reports.figures import OverlayRow, bar_chart, overlay_grid
from spt.reports.records import with_method_labels
from spt.reports.render import format_cell
from spt.reports.stats import compare
from spt.reports.tables import (
    METRIC_TITLES,
    defect_type_markdown,
    defect_type_table,
    metric_tables,
    significance_json,
    significance_markdown,
    write_metric_tables,
)

RECORDS_FILE = "records.parquet"
EXAMPLES_FILE = "examples.npz"
TRAINED_FILE = "trained.pt"
ZERO_SHOT = "zero_shot"
FINAL_STAGE = "final"
HEADLINE_MODE = "box"  # the headline table and the overlays use box prompts
FIGURE_METRIC = "iou"

Say = Callable[[str], None]


@dataclass(frozen=True)
class ReportConfig:
    """Where the report reads from and writes to, and its statistical settings."""

    eval_root: Path
    train_root: Path
    prepared_roots: tuple[Path, ...]
    out: Path
    reference: str = "spt"
    seed: int = 0
    n_boot: int = 10_000  # significance bootstrap resamples
    figure_n_boot: int = 2_000  # bar-chart bootstrap resamples
    examples: int = 3  # overlay rows per dataset


@dataclass(frozen=True)
class Produced:
    """One written file and the sentence the index gives it."""

    path: Path
    description: str


# --- inputs ---------------------------------------------------------------------------------


def first_run_file(root: Path, method: str, backbone: str, name: str) -> Path:
    """``<root>/[<run>/]<method>/<backbone>/<name>``: the first in sorted order when the
    pipeline keeps one folder per training seed (``seed0/``, ``seed1/``, ...)."""
    direct = Path(root) / method / backbone / name
    if direct.is_file():
        return direct
    nested = sorted(Path(root).glob(f"*/{method}/{backbone}/{name}"))
    return nested[0] if nested else direct


def load_records(eval_root: Path) -> pd.DataFrame:
    """Every ``[<run>/]<method>/<backbone>/records.parquet`` below ``eval_root``, concatenated
    (one run folder per training seed in the pipeline)."""
    files = sorted(Path(eval_root).glob(f"*/*/{RECORDS_FILE}")) + sorted(
        Path(eval_root).glob(f"*/*/*/{RECORDS_FILE}")
    )
    if not files:
        raise SuiteError(
            f"{eval_root}: no <method>/<backbone>/{RECORDS_FILE} here; run `spt evaluate` "
            "(or `dvc repro`) first, or fix --eval-root"
        )
    parts = []
    for path in files:
        part = read_records(path)
        check_names(part, str(path))  # they become file names under --out
        parts.append(part.assign(_source=str(path)))
    records = pd.concat(parts, ignore_index=True)
    check_unique(records, "_source")  # as `spt regress` does: never average a run in twice
    records = records.drop(columns="_source")
    if records.empty:
        raise SuiteError(
            f"{eval_root}: the records files hold no rows; rerun `spt evaluate` (or `dvc repro`)"
        )
    return records


def numerics_line(eval_root: Path) -> str:
    """One sentence on where the records' numbers come from (spt/numerics.py)."""
    files = sorted(Path(eval_root).rglob(RECORDS_FILE))
    lines = {
        summary_line(n) if n else "with unrecorded numerics" for n in map(read_numerics, files)
    }
    if len(lines) == 1:
        return f"Numbers {lines.pop()}."
    shown = "; ".join(sorted(lines))
    return (
        f"Numbers made under {len(lines)} different numerics ({shown}): bit-level "
        "comparisons between these records do not hold."
    )


def trainable_parameters(train_root: Path, method: str, backbone: str) -> int | None:
    """From ``<train_root>/[<run>/]<method>/<backbone>/trained.pt``; 0 for zero-shot; else
    None."""
    path = first_run_file(train_root, method, backbone, TRAINED_FILE)
    if not path.is_file():
        return 0 if method == ZERO_SHOT else None
    count = read_trained(path).get("trainable_parameters")
    if isinstance(count, bool) or not isinstance(count, int):
        raise SuiteError(
            f"{path}: no integer 'trainable_parameters'; not written by `spt train`, retrain"
        )
    return count


def label_order(records: pd.DataFrame, reference: str) -> list[str]:
    """Row order of tables and figures: zero-shot, the other baselines, then the reference;
    each label once (with ``--reference-method zero_shot`` zero-shot comes last)."""
    labelled = with_method_labels(records)
    labels = sorted(labelled["label"].unique(), key=str)
    is_reference = labelled["method"] == reference
    reference_labels = sorted(labelled.loc[is_reference, "label"].unique(), key=str)
    first = [label for label in labels if label == ZERO_SHOT and label not in reference_labels]
    middle = [label for label in labels if label not in first and label not in reference_labels]
    return first + middle + reference_labels


# --- tables, significance, seed spread -------------------------------------------------------


def write_tables(
    records: pd.DataFrame, config: ReportConfig, order: Sequence[str], say: Say
) -> tuple[dict[tuple[str, str], pd.DataFrame], list[Produced]]:
    """Metric tables per (backbone, prompt mode), with that backbone's parameter counts."""
    tables: dict[tuple[str, str], pd.DataFrame] = {}
    for backbone, part in records.groupby("backbone", sort=True):
        counts = {
            method: trainable_parameters(config.train_root, method, str(backbone))
            for method in sorted(part["method"].unique(), key=str)
        }
        tables |= metric_tables(part, counts, method_order=order)
    paths = write_metric_tables(tables, config.out / "tables")
    kinds = {".md": "markdown", ".tex": "LaTeX, booktabs", ".csv": "CSV, full precision"}
    keys = [key for key in tables for _ in kinds]
    produced = [
        Produced(
            path,
            f"mean IoU and boundary IoU per method and dataset with their unweighted mean, "
            f"trainable parameters and dropped records; backbone {backbone}, prompt mode "
            f"{mode} ({kinds[path.suffix]}).",
        )
        for path, (backbone, mode) in zip(paths, keys, strict=True)
    ]
    say(f"tables: {len(tables)} (backbone, prompt mode) tables in {config.out / 'tables'}")
    return tables, produced


def write_defect_type_tables(
    records: pd.DataFrame, config: ReportConfig, order: Sequence[str], say: Say
) -> list[Produced]:
    """Per backbone: mean IoU per (dataset, defect type) and method under box prompts."""
    produced = []
    for backbone, part in records.groupby("backbone", sort=True):
        table = defect_type_table(part, HEADLINE_MODE, FIGURE_METRIC, order)
        stem = config.out / "tables" / f"defect_types_{backbone}"
        paths = [stem.with_suffix(".md"), stem.with_suffix(".csv")]
        if table.empty:
            for path in paths:
                path.unlink(missing_ok=True)  # a stale table would describe other records
            continue
        title = f"Mean IoU per defect type, backbone {backbone}, {HEADLINE_MODE} prompts"
        write_text_atomically(paths[0], defect_type_markdown(table, title))
        write_text_atomically(paths[1], table.to_csv(lineterminator="\n"))
        for path in paths:
            produced.append(
                Produced(
                    path,
                    f"mean IoU per defect type and method ({HEADLINE_MODE} prompts, backbone "
                    f"{backbone}) for the datasets with several defect types, with each "
                    "type's image count.",
                )
            )
    if produced:
        say(f"defect types: {len(produced) // 2} table(s) in {config.out / 'tables'}")
    return produced


def significance_records(records: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The reference's non-final stages renamed into baselines ``<reference> (<stage>)``."""
    extra = (records["method"] == reference) & (records["stage"] != FINAL_STAGE)
    renamed = records.copy()
    renamed.loc[extra, "method"] = [f"{reference} ({s})" for s in records.loc[extra, "stage"]]
    renamed.loc[extra, "stage"] = FINAL_STAGE
    return renamed


def check_reference(records: pd.DataFrame, reference: str, eval_root: Path) -> None:
    has_final = (records["method"] == reference) & (records["stage"] == FINAL_STAGE)
    if not has_final.any():
        found = ", ".join(sorted(records["method"].unique(), key=str))
        raise SuiteError(
            f"{eval_root}: no final-stage records of reference method {reference!r} (found "
            f"{found}); pass --reference-method NAME or evaluate {reference}"
        )


def write_significance(records: pd.DataFrame, config: ReportConfig, say: Say) -> list[Produced]:
    say(f"significance: {config.reference} (final) against every other method ...")
    table = compare(
        significance_records(records, config.reference),
        reference=config.reference,
        n_boot=config.n_boot,
        seed=config.seed,
    )
    stages = sorted(set(records.loc[records["method"] == config.reference, "stage"]) - {"final"})
    text = significance_markdown(table)
    if stages:
        names = ", ".join(f"`{config.reference} ({stage})`" for stage in stages)
        text += (
            f"\nRows with baseline {names} compare {config.reference}'s final output with its "
            "own earlier stage on the same images and prompts.\n"
        )
    markdown_path = config.out / "significance.md"
    json_path = config.out / "significance.json"
    write_text_atomically(markdown_path, text)
    write_text_atomically(json_path, significance_json(table))
    counts = table["verdict"].value_counts()
    say("  verdicts: " + ", ".join(f"{int(n)} {v}" for v, n in sorted(counts.items())))
    return [
        Produced(
            markdown_path,
            f"paired Wilcoxon tests with Holm correction, bootstrap CIs and effect sizes of "
            f"{config.reference} (final) against every other method, per backbone, prompt "
            "mode and dataset.",
        ),
        Produced(json_path, "the same comparisons and their settings, machine-readable."),
    ]


def write_seed_spread(records: pd.DataFrame, out: Path, say: Say) -> list[Produced]:
    """``seed_spread.csv`` when the records hold several seeds; nothing otherwise."""
    path = out / "seed_spread.csv"
    n_seeds = records["seed"].nunique()
    if n_seeds < 2:
        path.unlink(missing_ok=True)  # a stale spread would contradict the single seed
        say("seed spread: one seed only, skipped")
        return []
    spread = seed_spread(records, "iou")
    write_text_atomically(path, spread.to_csv(index=False, lineterminator="\n"))
    say(f"seed spread: {n_seeds} seeds -> {path}")
    return [
        Produced(
            path,
            f"mean, std, min and max over {n_seeds} seeds of each method's per-dataset mean IoU "
            "(dataset 'mean': the unweighted mean over datasets).",
        )
    ]


def write_cost_tables(records: pd.DataFrame, config: ReportConfig, say: Say) -> list[Produced]:
    """``tables/cost_<backbone>.{md,csv}``: each method's cost, from its logs (spt.reports.cost)."""
    produced = []
    for backbone, part in records.groupby("backbone", sort=True):
        # the rows of the metric tables: zero-shot, the baselines, the reference last
        labelled = with_method_labels(part)
        method_of = dict(zip(labelled["label"], labelled["method"], strict=True))
        labels = label_order(part, config.reference)
        methods = list(dict.fromkeys(method_of[label] for label in labels))
        table = cost_rows(config.eval_root, config.train_root, str(backbone), methods)
        stem = config.out / "tables" / f"cost_{backbone}"
        write_text_atomically(stem.with_suffix(".md"), cost_markdown(table, str(backbone)))
        write_text_atomically(
            stem.with_suffix(".csv"), table.to_csv(index=False, lineterminator="\n")
        )
        description = (
            f"trainable parameters, training seconds per step and epoch, evaluation seconds per "
            f"image (encode) and prompt (decode), peak memory, device and precision; backbone "
            f"{backbone}, from the training and evaluation logs"
        )
        produced += [
            Produced(stem.with_suffix(".md"), description + "."),
            Produced(stem.with_suffix(".csv"), description + " (CSV, full precision)."),
        ]
        say(f"cost: {stem.with_suffix('.md')}")
    return produced


# --- figures ---------------------------------------------------------------------------------


def write_bar_charts(
    records: pd.DataFrame, config: ReportConfig, order: Sequence[str], say: Say
) -> list[Produced]:
    produced = []
    for (backbone, mode), part in records.groupby(["backbone", "prompt_mode"], sort=True):
        path = config.out / "figures" / f"bars_{backbone}_{mode}.png"
        if not scorable(part, FIGURE_METRIC).any():
            path.unlink(missing_ok=True)
            say(f"bar chart {backbone}/{mode}: no scorable records, skipped")
            continue
        bar_chart(
            records,
            path,
            str(backbone),
            str(mode),
            FIGURE_METRIC,
            config.seed,
            config.figure_n_boot,
            method_order=order,
        )
        say(f"bar chart: {path}")
        produced.append(
            Produced(
                path,
                f"mean {METRIC_TITLES[FIGURE_METRIC]} per dataset and over datasets with 95% "
                f"bootstrap CIs; backbone {backbone}, prompt mode {mode}.",
            )
        )
    return produced


def load_method_examples(
    eval_root: Path, methods: Sequence[str], backbone: str, say: Say
) -> dict[str, dict[str, np.ndarray]]:
    """{method: read_examples(...)} for the methods of ``backbone`` that kept examples."""
    found = {}
    for method in methods:
        path = first_run_file(eval_root, method, backbone, EXAMPLES_FILE)
        if not path.is_file():
            say(f"overlays {backbone}: {path} missing, {method} left out")
            continue
        try:
            found[method] = read_examples(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise SuiteError(
                f"{path}: unreadable examples file ({type(exc).__name__}); rerun `spt evaluate`"
            ) from None
    return found


def shared_example_ids(examples: dict[str, dict[str, np.ndarray]], image_ids: set[str]):
    """Sorted ids of ``image_ids`` with a final box-prompt mask from every method."""
    common = set(image_ids)
    for masks in examples.values():
        common &= {
            key.rsplit("|", 2)[0]
            for key in masks
            if key.endswith(f"|{HEADLINE_MODE}|{FINAL_STAGE}")
        }
    return sorted(common)


def overlay_row(
    image_id: str,
    manifest_path: Path,
    manifest: pd.DataFrame,
    predictions: dict[str, np.ndarray],
    eval_root: Path,
) -> OverlayRow:
    if image_id not in manifest.index:
        raise SuiteError(
            f"{manifest_path}: no image {image_id!r}; the evaluation used another manifest, "
            "fix --prepared-root or rerun `spt evaluate`"
        )
    row = manifest.loc[image_id]
    image = read_rgb(resolve_manifest_path(row["image_path"], manifest_path.parent))
    ground_truth = read_mask(resolve_manifest_path(row["mask_path"], manifest_path.parent)) > 128
    for label, mask in predictions.items():
        if mask.shape != ground_truth.shape:
            raise SuiteError(
                f"{eval_root}: {label} mask of {image_id} is {mask.shape}, its ground truth "
                f"{ground_truth.shape}; rerun `spt evaluate` on the current prepared data"
            )
    return OverlayRow(image_id, image, ground_truth, predictions)


def write_overlays(
    records: pd.DataFrame, config: ReportConfig, order: Sequence[str], say: Say
) -> list[Produced]:
    """One qualitative figure per (backbone, dataset) from the examples every method kept."""
    labelled = with_method_labels(records)
    produced = []
    for backbone, part in labelled.groupby("backbone", sort=True):
        pairs = part[["label", "method", "stage"]].drop_duplicates()
        stage_of = {label: (m, s) for label, m, s in pairs.itertuples(index=False)}
        labels = [label for label in order if label in stage_of]
        methods = sorted(part["method"].unique(), key=str)
        examples = load_method_examples(config.eval_root, methods, str(backbone), say)
        for dataset, rows in part.groupby("dataset", sort=True):
            path = config.out / "figures" / f"overlay_{backbone}_{dataset}.png"
            ids = shared_example_ids(examples, set(rows["image_id"]))[: config.examples]
            if not examples or not ids:
                path.unlink(missing_ok=True)
                say(
                    f"overlay {backbone}/{dataset}: no example masks shared by all methods, skipped"
                )
                continue
            manifest_path = find_manifest(str(dataset), config.prepared_roots)
            manifest = read_manifest(manifest_path).set_index("image_id")
            items = []
            for image_id in ids:
                predictions = {}
                for label in labels:
                    method, stage = stage_of[label]
                    mask = examples.get(method, {}).get(f"{image_id}|{HEADLINE_MODE}|{stage}")
                    if mask is not None:
                        predictions[label] = mask
                items.append(
                    overlay_row(image_id, manifest_path, manifest, predictions, config.eval_root)
                )
            overlay_grid(items, path)
            say(f"overlay: {path} ({len(items)} images)")
            produced.append(
                Produced(
                    path,
                    f"{len(items)} {dataset} test images: the image, its ground truth and "
                    f"each method's {HEADLINE_MODE}-prompt mask with its IoU; backbone "
                    f"{backbone}.",
                )
            )
    return produced


# --- index -----------------------------------------------------------------------------------


def headline_markdown(tables: dict[tuple[str, str], pd.DataFrame], order: Sequence[str]) -> str:
    """Methods x backbones: the unweighted mean IoU over datasets under box prompts."""
    column = (METRIC_TITLES["iou"], MEAN_OVER_DATASETS)
    by_backbone = {
        backbone: table[column]
        for (backbone, mode), table in sorted(tables.items())
        if mode == HEADLINE_MODE and column in table.columns
    }
    if not by_backbone:
        return f"No {HEADLINE_MODE}-prompt records; see the tables for the other prompt modes.\n"
    labels = [label for label in order if any(label in s.index for s in by_backbone.values())]
    lines = [
        "| method | " + " | ".join(f"IoU, {b}" for b in by_backbone) + " |",
        "| --- |" + " ---: |" * len(by_backbone),
    ]
    for label in labels:
        cells = [format_cell(s.get(label, np.nan), 3) for s in by_backbone.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def index_markdown(
    records: pd.DataFrame,
    config: ReportConfig,
    tables: dict[tuple[str, str], pd.DataFrame],
    order: Sequence[str],
    produced: Sequence[Produced],
) -> str:
    def names(column: str) -> str:
        return ", ".join(str(v) for v in sorted(records[column].unique(), key=str))

    lines = [
        "# Report",
        "",
        f"Written by `spt report` from the evaluation records under `{config.eval_root}`: "
        f"{len(records)} records; methods {names('method')}; backbones {names('backbone')}; "
        f"datasets {names('dataset')}; prompt modes {names('prompt_mode')}; seeds "
        f"{names('seed')}.",
        "",
        numerics_line(config.eval_root),
        "",
        f"## Headline: mean IoU over datasets, {HEADLINE_MODE} prompts",
        "",
        "The unweighted mean over datasets of each dataset's mean IoU (over scorable images, "
        "then seeds), so every dataset weighs the same. Row order as in the tables.",
        "",
        headline_markdown(tables, order),
        "## Files",
        "",
    ]
    for item in produced:
        link = item.path.relative_to(config.out).as_posix()
        lines.append(f"- [{link}]({link}): {item.description}")
    return "\n".join(lines) + "\n"


def build_report(config: ReportConfig, say: Say = print) -> list[Produced]:
    """Write every report file under ``config.out``; return them, the index last."""
    if config.examples < 1:
        raise SuiteError(f"--examples {config.examples}: give at least 1 image per dataset")
    if config.n_boot < 1 or config.figure_n_boot < 1:
        raise SuiteError("--n-boot and --figure-n-boot must be positive numbers of resamples")
    records = load_records(config.eval_root)
    say(f"records: {len(records)} rows from {config.eval_root}")
    check_reference(records, config.reference, config.eval_root)
    with folder_lock(config.out, "report"):  # a second report on one --out: one line
        return _write_report(records, config, say)


def _write_report(records: pd.DataFrame, config: ReportConfig, say: Say) -> list[Produced]:
    order = label_order(records, config.reference)
    tables, produced = write_tables(records, config, order, say)
    produced += write_defect_type_tables(records, config, order, say)
    produced += write_significance(records, config, say)
    produced += write_seed_spread(records, config.out, say)
    produced += write_cost_tables(records, config, say)
    produced += write_bar_charts(records, config, order, say)
    produced += write_overlays(records, config, order, say)
    index_path = config.out / "README.md"
    write_text_atomically(index_path, index_markdown(records, config, tables, order, produced))
    say(f"index: {index_path}")
    return [*produced, Produced(index_path, "this index")]
