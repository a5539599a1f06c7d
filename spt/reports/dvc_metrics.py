"""DVC metrics and plots files: the numbers ``dvc exp show``, ``dvc metrics diff`` and
``dvc plots`` read.

:func:`write_dvc_metrics` writes under ``out`` (``metrics/`` in the pipeline):

* ``headline.json``: the unweighted mean over datasets of IoU and boundary IoU, one key per
  ``<prompt mode>.<method>.<stage>.<metric>`` (``box.spt.final.iou``), plus ``n_seeds`` and
  ``n_datasets``;
* ``datasets.json``: the per-dataset means, one key per
  ``<prompt mode>.<dataset>.<method>.<stage>.<metric>``;
* ``plots/train_loss.csv``: the total training loss per epoch of every trained method and seed
  (``run`` = ``<method> seed<N>``), from each run's ``train_log.csv``;
* ``plots/datasets_box.csv``: the per-dataset and mean IoU of every method under box prompts
  (the report's headline mode), for grouped bars;
* ``plots/seed_spread.csv``: the box-prompt mean IoU over datasets of every method per seed.

The JSON files are flat (one key per line, sorted), so ``git diff`` shows whole keys and DVC
shows the same dotted names. The numbers are those of the report's tables
(:func:`spt.reports.tables.metric_tables`: an image enters a mean only when every metric is
finite for it; over several seeds, the mean of the per-seed means), rounded to 6 decimals; a
method scored on fewer datasets than the others gets no headline key rather than a mean over
another set of datasets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from spt.artifacts import write_text_atomically
from spt.errors import SuiteError
from spt.harness.aggregate import MEAN_OVER_DATASETS
from spt.reports.aggregate import per_seed_mean_over_datasets
from spt.reports.records import with_method_labels
from spt.reports.tables import METRIC_TITLES, metric_tables

METRICS = ("iou", "biou")
HEADLINE_MODE = "box"
DIGITS = 6
TRAIN_LOG = "train_log.csv"
HEADLINE_FILE = "headline.json"
DATASETS_FILE = "datasets.json"
PLOTS_FOLDER = "plots"

Say = Callable[[str], None]


def _stage_of_label(records: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Table row label (``spt (draft)``) -> (method, stage)."""
    labelled = with_method_labels(records)
    pairs = labelled.groupby("label", sort=True)[["method", "stage"]].first()
    return {label: (str(row.method), str(row.stage)) for label, row in pairs.iterrows()}


def metric_cells(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (prompt_mode, dataset, label, method, stage, metric) with its ``value``, the
    tables' numbers (dataset ``mean``: the unweighted mean over datasets); NaN cells left out.
    ``records`` must hold one backbone."""
    backbones = sorted(records["backbone"].unique(), key=str)
    if len(backbones) != 1:
        raise SuiteError(
            f"DVC metrics need the records of one backbone, got {', '.join(map(str, backbones))}; "
            "pass --backbone"
        )
    stages = _stage_of_label(records)
    titles = {title: metric for metric, title in METRIC_TITLES.items() if metric in METRICS}
    rows = []
    for (_, mode), table in metric_tables(records, {}, metrics=METRICS).items():
        for label, row in table.iterrows():
            method, stage = stages[label]
            for (title, dataset), number in row.items():
                if title in titles and math.isfinite(float(number)):
                    rows.append((mode, dataset, label, method, stage, titles[title], number))
    columns = ["prompt_mode", "dataset", "label", "method", "stage", "metric", "value"]
    cells = pd.DataFrame(rows, columns=columns)
    cells["value"] = cells["value"].astype(float).round(DIGITS)
    return cells


def metric_values(cells: pd.DataFrame) -> tuple[dict[str, float], dict[str, float]]:
    """(headline, per-dataset) flat dictionaries of :func:`metric_cells`."""
    headline: dict[str, float] = {}
    per_dataset: dict[str, float] = {}
    for row in cells.itertuples(index=False):
        if row.dataset == MEAN_OVER_DATASETS:
            headline[f"{row.prompt_mode}.{row.method}.{row.stage}.{row.metric}"] = row.value
        else:
            key = f"{row.prompt_mode}.{row.dataset}.{row.method}.{row.stage}.{row.metric}"
            per_dataset[key] = row.value
    return headline, per_dataset


def _json(values: dict[str, float | int]) -> str:
    return json.dumps(dict(sorted(values.items())), indent=2) + "\n"


def train_loss_rows(train_root: Path, methods: list[str], backbone: str) -> pd.DataFrame:
    """``epoch, loss, method, seed, run`` from every ``[seed<N>/]<method>/<backbone>/
    train_log.csv`` under ``train_root`` of the given methods."""
    rows = []
    for method in methods:
        direct = Path(train_root) / method / backbone / TRAIN_LOG
        files = [(None, direct)] if direct.is_file() else []
        for path in sorted(Path(train_root).glob(f"*/{method}/{backbone}/{TRAIN_LOG}")):
            run = path.parents[2].name
            files.append((int(run[4:]) if run[4:].isdigit() else run, path))
        for seed, path in files:
            try:
                log = pd.read_csv(path)
                epochs = log["epoch"].astype(int)
                losses = log["loss"].astype(float).round(DIGITS)
            except (OSError, ValueError, KeyError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise SuiteError(
                    f"{path}: not a training log with integer epoch and numeric loss columns "
                    f"({reason}); rerun `spt train`"
                ) from None
            seed_text = "" if seed is None else f" seed{seed}"
            rows.append(
                pd.DataFrame(
                    {
                        "epoch": epochs,
                        "loss": losses,
                        "method": method,
                        "seed": seed if seed is not None else "",
                        "run": f"{method}{seed_text}",
                    }
                )
            )
    columns = ["epoch", "loss", "method", "seed", "run"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def _sorted(frame: pd.DataFrame, keys: Sequence[str], order: Sequence[str]) -> pd.DataFrame:
    """``frame`` sorted by ``keys``, where ``method`` sorts in ``order`` (the report's row
    order; labels it lacks go last, alphabetically) and dataset ``mean`` after the datasets."""
    rank = {label: i for i, label in enumerate(order)}

    def key(column: pd.Series) -> pd.Series:
        if column.name == "method":
            return column.map(lambda label: (rank.get(label, len(rank)), label))
        if column.name == "dataset":
            return column.map(lambda name: (name == MEAN_OVER_DATASETS, name))
        return column

    return frame.sort_values(list(keys), key=key, kind="stable").reset_index(drop=True)


def datasets_box_rows(cells: pd.DataFrame, order: Sequence[str] = ()) -> pd.DataFrame:
    """``dataset, method, iou, biou`` under box prompts (``method`` is the table's row label,
    in ``order``); dataset ``mean``, the headline, comes after the datasets."""
    box = cells[cells["prompt_mode"] == HEADLINE_MODE]
    frame = box.pivot_table(
        index=["dataset", "label"], columns="metric", values="value", aggfunc="first"
    )
    frame = frame.reindex(columns=list(METRICS)).reset_index().rename(columns={"label": "method"})
    frame.columns.name = None
    return _sorted(frame[["dataset", "method", *METRICS]], ["dataset", "method"], order)


def seed_rows(records: pd.DataFrame, order: Sequence[str] = ()) -> pd.DataFrame:
    """``method, seed, iou``: the box-prompt mean IoU over datasets per method (in ``order``)
    and seed."""
    box = records[records["prompt_mode"] == HEADLINE_MODE]
    if box.empty:
        return pd.DataFrame(columns=["method", "seed", "iou"])
    per_seed = per_seed_mean_over_datasets(box, "iou")
    frame = per_seed.reset_index()
    frame = frame.assign(method=frame["label"], seed=frame["seed"].astype(int))
    frame["iou"] = frame[per_seed.name].round(DIGITS)
    return _sorted(frame[["method", "seed", "iou"]], ["method", "seed"], order)


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def write_dvc_metrics(
    records: pd.DataFrame,
    train_root: Path,
    out: Path,
    order: Sequence[str] = (),
    say: Say = print,
) -> list[Path]:
    """Write the metrics and plots files of one backbone's ``records``; returns their paths.
    ``order``: the methods' row labels in the order plots list them (the report's order)."""
    cells = metric_cells(records)
    headline, per_dataset = metric_values(cells)
    if not headline:
        raise SuiteError(
            "no method has a mean over every dataset of its prompt mode, so there is no "
            "headline metric; evaluate every method on the same datasets"
        )
    backbone = str(records["backbone"].iloc[0])
    counts = {
        "n_seeds": int(records["seed"].nunique()),
        "n_datasets": int(records["dataset"].nunique()),
    }
    trained = sorted(set(records["method"]) - {"zero_shot"}, key=str)
    files = {
        out / HEADLINE_FILE: _json({**headline, **counts}),
        out / DATASETS_FILE: _json(per_dataset),
        out / PLOTS_FOLDER / "train_loss.csv": _csv(train_loss_rows(train_root, trained, backbone)),
        out / PLOTS_FOLDER / "datasets_box.csv": _csv(datasets_box_rows(cells, order)),
        out / PLOTS_FOLDER / "seed_spread.csv": _csv(seed_rows(records, order)),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, text)
    say(
        f"DVC metrics: {len(headline)} headline and {len(per_dataset)} per-dataset values "
        f"({counts['n_seeds']} seed(s), {counts['n_datasets']} datasets) -> {out}"
    )
    return list(files)
