"""Paper figures: metric bars with bootstrap CIs, qualitative mask overlays, and which images to show.

* :func:`bar_values` / :func:`bar_chart`: per backbone and prompt mode, datasets on the x axis
  plus ``mean`` (the unweighted mean over datasets), one bar per method label (SPT's draft and
  final are two). A bar is the mean over images of the per-image metric (averaged over seeds
  first, so images, not seeds, are the resampled units); the error bar is the percentile
  bootstrap interval of that mean. The ``mean`` group resamples images within every dataset
  with the same replicate index and averages the dataset means, a stratified bootstrap of the
  unweighted mean.
* :func:`overlay_grid`: one row per image: the image, its ground truth, then every method's
  predicted mask over the image with its IoU. Predictions come from the caller.
* :func:`pick_examples`: a few images per dataset spread from poor to good reference IoU.

Random draws use ``numpy.random.default_rng([seed, crc32(label), crc32(dataset)])``: a result
depends on the seed and its own names only, not on which other methods or datasets are present.
Figures are drawn on ``matplotlib.figure.Figure`` without pyplot, so no display is needed.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spt.artifacts import replace_atomically
from spt.errors import SuiteError
from spt.harness.aggregate import scorable
from spt.reports.aggregate import MEAN_OVER_DATASETS
from spt.reports.records import check_metric, check_records, with_method_labels

METRIC_TITLES = {"iou": "IoU", "biou": "Boundary IoU", "dice": "Dice"}
GROUND_TRUTH_COLOUR = (0, 200, 0)
PREDICTION_COLOUR = (230, 40, 40)
OVERLAY_ALPHA = 0.45


def _stable_rng(seed: int, *names: str) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SuiteError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), *(zlib.crc32(str(n).encode()) for n in names)])


def bootstrap_replicates(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement, same size) of ``values``."""
    indices = rng.integers(0, values.size, size=(n_boot, values.size))
    return values[indices].mean(axis=1)


def _select(records: pd.DataFrame, backbone: str, prompt_mode: str) -> pd.DataFrame:
    here = records[(records["backbone"] == backbone) & (records["prompt_mode"] == prompt_mode)]
    if here.empty:
        present = sorted(
            {f"{b}/{p}" for b, p in zip(records["backbone"], records["prompt_mode"], strict=True)}
        )
        raise SuiteError(
            f"no evaluation records for backbone {backbone!r} with prompt mode {prompt_mode!r}; "
            f"the records hold backbone/prompt mode {', '.join(present) or 'nothing'}"
        )
    return here


def _label_order(labels, method_order: Sequence[str] | None) -> list[str]:
    present = set(labels)
    first = [m for m in (method_order or []) if m in present]
    return first + sorted(present - set(first), key=str)


def bar_values(
    records: pd.DataFrame,
    backbone: str,
    prompt_mode: str,
    metric: str = "iou",
    seed: int = 0,
    n_boot: int = 2000,
    ci_level: float = 0.95,
    method_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The numbers behind :func:`bar_chart`.

    One row per (label, dataset) with ``mean``, ``ci_low``, ``ci_high`` and ``n_images``;
    datasets sorted, then ``mean`` for labels that have every dataset of this backbone and
    prompt mode. Labels follow ``method_order``, the rest alphabetically.
    """
    check_records(records)
    check_metric(metric)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise SuiteError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < ci_level < 1:
        raise SuiteError(f"ci_level must lie strictly between 0 and 1, got {ci_level!r}")
    # labels from all records, so SPT keeps its stage names even where one stage is absent
    here = _select(with_method_labels(records), backbone, prompt_mode)
    usable = here[scorable(here, metric)]
    if usable.empty:
        raise SuiteError(
            f"no scorable {metric} records for backbone {backbone!r} with prompt mode "
            f"{prompt_mode!r} (all are no_prompt or NaN); check the evaluation records"
        )
    values = pd.to_numeric(usable[metric], errors="coerce").astype(float)
    per_image = values.groupby([usable["label"], usable["dataset"], usable["image_id"]]).mean()
    datasets = sorted(here["dataset"].unique(), key=str)
    tail = (1 - ci_level) / 2
    scored = set(per_image.index.droplevel("image_id"))

    rows = []
    for label in _label_order(usable["label"].unique(), method_order):
        samples, replicates = {}, {}
        for dataset in datasets:
            if (label, dataset) not in scored:
                continue
            samples[dataset] = per_image.loc[(label, dataset)].to_numpy()
            rng = _stable_rng(seed, label, dataset)
            replicates[dataset] = bootstrap_replicates(samples[dataset], rng, n_boot)
            low, high = np.quantile(replicates[dataset], [tail, 1 - tail])
            rows.append((label, dataset, samples[dataset].mean(), low, high, samples[dataset].size))
        if len(samples) == len(datasets):
            # replicate b of the mean = mean over datasets of each dataset's replicate b
            unweighted = np.vstack(list(replicates.values())).mean(axis=0)
            low, high = np.quantile(unweighted, [tail, 1 - tail])
            point = np.mean([sample.mean() for sample in samples.values()])
            n_images = sum(sample.size for sample in samples.values())
            rows.append((label, MEAN_OVER_DATASETS, point, low, high, n_images))
    columns = ["label", "dataset", "mean", "ci_low", "ci_high", "n_images"]
    return pd.DataFrame(rows, columns=columns)


def bar_figure(
    values: pd.DataFrame,
    title: str,
    ylabel: str,
    size: tuple[float, float] | None = None,
    dpi: int = 150,
) -> Figure:
    """Grouped bars of :func:`bar_values` output: datasets on x, one bar per label."""
    labels = list(dict.fromkeys(values["label"]))
    groups = list(dict.fromkeys(values["dataset"]))
    if size is None:
        size = (max(6.0, 1.5 + len(groups) * (0.3 * len(labels) + 0.5)), 4.5)
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(labels)
    colours = matplotlib.colormaps["tab10"]
    for i, label in enumerate(labels):
        part = values[values["label"] == label].set_index("dataset").reindex(groups)
        present = part["mean"].notna().to_numpy()
        x = np.arange(len(groups))[present] + (i - (len(labels) - 1) / 2) * width
        heights = part["mean"].to_numpy(dtype=float)[present]
        below = heights - part["ci_low"].to_numpy(dtype=float)[present]
        above = part["ci_high"].to_numpy(dtype=float)[present] - heights
        ax.bar(
            x,
            heights,
            width,
            yerr=np.vstack([below, above]),
            capsize=2,
            label=label,
            color=colours(i % colours.N),
            error_kw={"elinewidth": 1.0, "ecolor": "black"},
        )
    if groups[-1] == MEAN_OVER_DATASETS and len(groups) > 1:
        ax.axvline(len(groups) - 1.5, color="grey", linestyle=":", linewidth=1)
    tick_text = ["mean\n(unweighted)" if g == MEAN_OVER_DATASETS else str(g) for g in groups]
    ax.set_xticks(np.arange(len(groups)), tick_text, rotation=30 if len(groups) > 6 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside upper center", ncols=min(len(labels), 4), frameon=False)
    return fig


def _figure_path(out_path: str | Path) -> Path:
    path = Path(out_path)
    if path.suffix.lower() != ".png":
        raise SuiteError(f"{path}: figure paths must end in .png (a PDF copy is optional)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def bar_chart(
    records: pd.DataFrame,
    out_path: str | Path,
    backbone: str,
    prompt_mode: str,
    metric: str = "iou",
    seed: int = 0,
    n_boot: int = 2000,
    *,
    method_order: Sequence[str] | None = None,
    size: tuple[float, float] | None = None,
    dpi: int = 150,
    also_pdf: bool = False,
) -> Path:
    """Write the CI bar chart of one backbone and prompt mode as PNG (and PDF); return the PNG.

    ``seed`` and ``n_boot`` drive the bootstrap; ``size`` is in inches (default grows with
    the number of bars), so the PNG is ``size * dpi`` pixels.
    """
    path = _figure_path(out_path)
    values = bar_values(records, backbone, prompt_mode, metric, seed, n_boot, 0.95, method_order)
    title = f"{METRIC_TITLES[metric]} by dataset: backbone {backbone}, prompt mode {prompt_mode}"
    ylabel = f"{METRIC_TITLES[metric]} (mean over images, 95% bootstrap CI)"
    fig = bar_figure(values, title, ylabel, size, dpi)
    save_figure(fig, path, dpi=dpi)
    if also_pdf:
        save_figure(fig, path.with_suffix(".pdf"))
    return path


@dataclass(frozen=True)
class OverlayRow:
    """One image of the qualitative figure and every method's prediction for it."""

    title: str  # shown over the image panel, e.g. the image id
    image: np.ndarray  # (H, W, 3) uint8, or (H, W) uint8 grey
    ground_truth: np.ndarray  # (H, W) bool
    predictions: Mapping[str, np.ndarray]  # method label -> (H, W) bool


def mask_iou(prediction: np.ndarray, ground_truth: np.ndarray) -> float:
    """|P & G| / |P | G|; NaN when both masks are empty."""
    union = np.logical_or(prediction, ground_truth).sum()
    return (
        float("nan")
        if union == 0
        else float(np.logical_and(prediction, ground_truth).sum() / union)
    )


def blend(image: np.ndarray, mask: np.ndarray, colour, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """``image`` with ``colour`` mixed in at ``alpha`` where ``mask`` is true (uint8 RGB)."""
    out = image.astype(float)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, dtype=float)
    return np.rint(out).astype(np.uint8)


def _checked_row(row: OverlayRow, index: int) -> OverlayRow:
    where = f"overlay row {index} ({row.title})"
    image = np.asarray(row.image)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise SuiteError(
            f"{where}: image must be uint8 (H, W, 3) or (H, W), got {image.dtype} {image.shape}"
        )
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    masks = {"ground truth": row.ground_truth, **row.predictions}
    for name, mask in masks.items():
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != image.shape[:2]:
            raise SuiteError(
                f"{where}: {name} mask must be bool of shape {image.shape[:2]}, got {mask.dtype} "
                f"{mask.shape}; threshold it first (e.g. mask > 128)"
            )
    return OverlayRow(row.title, image, np.asarray(row.ground_truth), dict(row.predictions))


def overlay_grid(
    items: Sequence[OverlayRow], out_path: str | Path, panel_inches: float = 2.2, dpi: int = 100
) -> Path:
    """Write the qualitative figure as PNG: rows are images, columns are image, ground truth and
    one column per method label (first appearance order); the ground-truth outline is drawn
    on every prediction. Each panel is ``panel_inches`` square; returns the path."""
    path = _figure_path(out_path)
    if not items:
        raise SuiteError("overlay_grid needs at least one image row; pick examples first")
    rows = [_checked_row(row, i) for i, row in enumerate(items)]
    methods = list(dict.fromkeys(label for row in rows for label in row.predictions))
    columns = 2 + len(methods)
    fig = Figure(figsize=(columns * panel_inches, len(rows) * panel_inches), dpi=dpi)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.25)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        panels = [
            (row.title, row.image),
            ("ground truth", blend(row.image, row.ground_truth, GROUND_TRUTH_COLOUR)),
        ]
        for method in methods:
            prediction = row.predictions.get(method)
            if prediction is None:
                panels.append((f"{method}\nno prediction", row.image))
                continue
            score = mask_iou(prediction, row.ground_truth)
            panels.append(
                (f"{method}\nIoU {score:.3f}", blend(row.image, prediction, PREDICTION_COLOUR))
            )
        for c, (title, picture) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(picture, interpolation="nearest")
            if c >= 2 and row.ground_truth.any() and not row.ground_truth.all():
                ax.contour(row.ground_truth, levels=[0.5], colors=["lime"], linewidths=0.8)
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
    save_figure(fig, path, dpi=dpi)
    return path


def save_figure(fig, path: Path, **options) -> None:
    """``fig.savefig`` through the one atomic writer: a kill or a full disk never leaves a
    0-byte or half-written figure (the format is the file name's, the temp file has none)."""
    fmt = path.suffix.lstrip(".") or "png"
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format=fmt, **options))


def pick_examples(
    records: pd.DataFrame,
    n_per_dataset: int,
    seed: int,
    *,
    method: str = "spt",
    stage: str = "final",
    backbone: str | None = None,
    prompt_mode: str | None = None,
) -> dict[str, list[str]]:
    """A few image ids per dataset, from best to worst reference IoU.

    The reference is ``method`` at ``stage`` (optionally one backbone / prompt mode); its IoU
    per image is averaged over seeds and prompt modes. The images of a dataset are ranked
    (IoU, then image id), the ranking is cut into ``n_per_dataset`` equal strata and one image
    is drawn from each, so the picks span good, median and poor results. A dataset with fewer
    scorable images gives all of them.
    """
    check_records(records)
    if isinstance(n_per_dataset, bool) or not isinstance(n_per_dataset, int) or n_per_dataset < 1:
        raise SuiteError(f"n_per_dataset must be a positive integer, got {n_per_dataset!r}")
    chosen = (records["method"] == method) & (records["stage"] == stage)
    if backbone is not None:
        chosen &= records["backbone"] == backbone
    if prompt_mode is not None:
        chosen &= records["prompt_mode"] == prompt_mode
    reference = records[chosen & scorable(records, "iou")]
    if reference.empty:
        present = sorted(
            {f"{m} ({s})" for m, s in zip(records["method"], records["stage"], strict=True)}
        )
        raise SuiteError(
            f"no scorable IoU records of reference {method} ({stage}) to pick examples from; "
            f"pass method/stage from: {', '.join(present) or 'none'}"
        )
    iou = pd.to_numeric(reference["iou"], errors="coerce").astype(float)
    per_image = iou.groupby([reference["dataset"], reference["image_id"]]).mean().reset_index()
    picks = {}
    for dataset, part in per_image.groupby("dataset", sort=True):
        ranked = part.sort_values(["iou", "image_id"], ascending=[False, True], kind="stable")
        ids = ranked["image_id"].astype(str).tolist()
        if len(ids) <= n_per_dataset:
            picks[str(dataset)] = ids
            continue
        rng = _stable_rng(seed, dataset)
        bounds = np.linspace(0, len(ids), n_per_dataset + 1).round().astype(int)
        picks[str(dataset)] = [
            ids[rng.integers(lo, hi)] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    return picks
