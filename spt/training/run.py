"""Training a registered Method on the prepared training split: the body of ``spt train``.

Output folder (``work/train/<method>/<backbone>`` by default):

- ``trained.pt``: the method checkpoint: only the trained tensors plus what rebuilds the model
  (method name, backbone, method params, trainable count, training config); loads with
  ``torch.load(weights_only=True)``. ``spt evaluate --trained`` reads it.
- ``state/last.pt``: the engine's resume state after the last finished epoch.
- ``train_log.csv``: per-epoch mean losses and learning rate.
- ``<backbone>.cost.csv`` beside the folder (``work/train/<method>/<backbone>.cost.csv``): wall
  seconds, steps and peak memory of each epoch (the report's cost table); kept out of the
  folder so the folder's bytes, and DVC's hash of it, do not change with timing.
- ``skipped_images.csv``: the training images left out because they admit no prompt (image id,
  reason); only when there are any. Their count is also in ``trained.pt``.
- ``training_images.csv``: the images the run trained on (dataset, category, image id), the
  record that a label-efficiency subset or a held-out dataset was respected.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from spt.artifacts import TRAINED_FORMAT, folder_lock, plain, save_torch, write_text_atomically
from spt.data.manifest import find_manifest, read_manifest, resolve_manifest_path
from spt.data.stable_random import keyed_rank
from spt.errors import SuiteError
from spt.harness.method import Method, TrainingSample, check_trainable
from spt.numerics import describe
from spt.training.engine import TrainConfig, TrainResult, train
from spt.training.samples import SampleOptions, TrainingSet

TRAINED_FILE = "trained.pt"
SKIPPED_FILE = "skipped_images.csv"
IMAGES_FILE = "training_images.csv"
SKIPPED_SHOWN = 3  # image ids named in the warning; the file lists them all


def training_rows(
    prepared_roots: str | Path | Sequence[str | Path], datasets: list[str], limit: int | None = None
) -> pd.DataFrame:
    """Train-split defect images with a non-empty mask from each dataset's manifest (found in
    the first of ``prepared_roots`` that has it), paths resolved, in image-id order; ``limit``
    keeps the first N per dataset."""
    if isinstance(prepared_roots, str | Path):
        prepared_roots = [prepared_roots]
    frames = []
    for dataset in datasets:
        path = find_manifest(dataset, prepared_roots)
        manifest = read_manifest(path)
        rows = manifest[
            (manifest["split"] == "train")
            & (manifest["label"] == "defect")
            & (manifest["mask_pixels"] > 0)
        ].sort_values("image_id", kind="stable")
        if limit is not None:
            rows = rows.head(limit)
        if rows.empty:
            raise SuiteError(f"{path}: no train-split defect images; check data.train_fraction")
        rows = rows.copy()
        for column in ("image_path", "mask_path"):
            blank = rows[column].astype(str).str.strip() == ""
            if blank.any():
                why = "mask_pixels > 0 but no" if column == "mask_path" else "no"
                raise SuiteError(
                    f"{path}: {rows.loc[blank, 'image_id'].iloc[0]} has {why} {column}; "
                    "rerun `spt prepare`"
                )
            rows[column] = [str(resolve_manifest_path(p, path.parent)) for p in rows[column]]
        frames.append(rows)
    if not frames:
        raise SuiteError("no datasets to train on: pass --datasets or set train.datasets")
    return pd.concat(frames, ignore_index=True)


def per_category_subset(rows: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """The first ``k`` images of every (dataset, category) in a keyed order (all of them where
    a category has fewer), in image-id order: the label-efficiency training set.

    The order is a pure function of (seed, dataset, image id), so the k = 1 set is inside the
    k = 4 set, which is inside k = 16, whatever else the manifest holds."""
    if k < 1:
        raise SuiteError(f"images per category must be a positive number, got {k}")
    rank = [
        keyed_rank(seed, "label-efficiency", d, i)
        for d, i in zip(rows["dataset"], rows["image_id"], strict=True)
    ]
    ordered = rows.assign(_rank=rank).sort_values(["dataset", "category", "_rank"], kind="stable")
    kept = ordered.groupby(["dataset", "category"], sort=False).head(k)
    return (
        kept.drop(columns="_rank")
        .sort_values(["dataset", "image_id"], kind="stable")
        .reset_index(drop=True)
    )


class MethodModule(nn.Module):
    """The engine's model: holds the method's network (so DDP sees its parameters) and turns a
    list of samples into the method's losses."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.network = method.network
        self._method = (method,)  # a tuple: not registered as a submodule twice

    def forward(self, samples: list[TrainingSample]) -> dict[str, torch.Tensor]:
        return self._method[0].training_losses(samples)


def _as_list(samples: list[TrainingSample]) -> list[TrainingSample]:
    return samples


def train_method(
    method: Method,
    rows: pd.DataFrame,
    config: TrainConfig,
    sample_options: SampleOptions,
    out_dir: str | Path,
    resume: bool = False,
    restart: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
    stop_after_epochs: int | None = None,
    compute: dict | None = None,
) -> tuple[Path, TrainResult]:
    """Train ``method`` on ``rows``; return the path of ``trained.pt`` and the result.

    ``compute``: how it computed (precision, attention, encoder checkpointing), saved in
    ``trained.pt`` for the report's cost table.

    Rank 0 (the only process that writes ``out_dir``) holds the folder's lock throughout, so a
    second training into the same folder gets one line naming the first."""
    out_dir = Path(out_dir)
    lock = folder_lock(out_dir, "train") if is_main_process() else contextlib.nullcontext()
    with lock:
        state = out_dir / "state" / "last.pt"
        if state.exists() and not (resume or restart):
            raise SuiteError(
                f"{state}: an earlier run of this training exists; pass --resume to continue it or "
                "--restart to start over"
            )
        if restart and state.exists():
            state.unlink()
        if not (resume and state.exists()) and is_main_process():
            # A new run's results replace the earlier run's: removed now, so a run killed before it
            # ends leaves no trained.pt of another run for `spt evaluate` to pick up.
            for stale in (
                out_dir / TRAINED_FILE,
                out_dir / "train_log.csv",
                cost_log_path(out_dir),
            ):
                stale.unlink(missing_ok=True)
        check_trainable(method)
        if method.trainable_parameter_count() == 0:
            raise SuiteError(
                f"method {method.name!r} has no trainable parameters; nothing to train"
            )
        dataset = TrainingSet(rows, method.spec, sample_options, device)
        if is_main_process():
            report_skipped(dataset, len(rows), out_dir)
            write_training_images(rows, dataset.image_ids, out_dir)
        module = MethodModule(method)
        result = train(
            module, dataset.image_ids, dataset, _as_list, config, out_dir,
            resume=resume, device=device, stop_after_epochs=stop_after_epochs, progress=progress,
            cost_log=cost_log_path(out_dir) if is_main_process() else None,
        )  # fmt: skip
        trained_path = out_dir / TRAINED_FILE
        if is_main_process() and result.epochs_done == config.epochs:
            summary = {
                "skipped_images": len(dataset.skipped),
                "jitter_fallbacks": len(dataset.jitter_fallbacks),
            }
            save_trained(
                method, trained_path, config, result, summary, describe(str(device)), compute
            )
            history = pd.DataFrame(result.history).to_csv(index=False)
            write_text_atomically(out_dir / "train_log.csv", history)
        return trained_path, result


def cost_log_path(out_dir: Path) -> Path:
    """``<out>/<method>/<backbone>.cost.csv``, beside the training folder rather than in it: the
    folder's bytes do not depend on timing, so DVC sees a retrain with equal weights as
    unchanged, and the timings are their own DVC output."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.cost.csv"


def report_skipped(dataset: TrainingSet, total: int, out_dir: Path) -> None:
    """Warn on stderr about the images training leaves out and list them in skipped_images.csv
    (a stale list from an earlier run is removed when none are left out)."""
    path = out_dir / SKIPPED_FILE
    if not dataset.skipped:
        path.unlink(missing_ok=True)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = pd.DataFrame(dataset.skipped, columns=["image_id", "reason"])
    write_text_atomically(path, skipped.to_csv(index=False))
    shown = "; ".join(f"{i} ({r})" for i, r in dataset.skipped[:SKIPPED_SHOWN])
    more = ", ..." if len(dataset.skipped) > SKIPPED_SHOWN else ""
    print(
        f"warning: skipped {len(dataset.skipped)} of {total} training images that admit no "
        f"prompt: {shown}{more}; all listed in {path}",
        file=sys.stderr,
    )


def write_training_images(rows: pd.DataFrame, used: Sequence[str], out_dir: Path) -> None:
    """``training_images.csv``: dataset, category and id of every image the run trains on."""
    used_ids = set(used)
    kept = rows[rows["image_id"].isin(used_ids)][["dataset", "category", "image_id"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / IMAGES_FILE, kept.to_csv(index=False))


def read_training_images(folder: str | Path) -> pd.DataFrame:
    """The ``training_images.csv`` of a training folder (dataset, category, image_id)."""
    path = Path(folder) / IMAGES_FILE
    if not path.is_file():
        raise SuiteError(f"{path}: not found; the run predates it or did not finish; retrain")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def is_main_process() -> bool:
    """Rank 0 of a torchrun job (also before the process group exists), or a plain run."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def save_trained(
    method: Method,
    path: Path,
    config: TrainConfig,
    result: TrainResult,
    summary: dict[str, int] | None = None,
    numerics: dict | None = None,
    compute: dict | None = None,
) -> None:
    """``summary``: counts about the data (``skipped_images``, ``jitter_fallbacks``);
    ``numerics``: :func:`spt.numerics.describe` of the run (where its bits come from)."""
    save_torch(
        {
            "format": TRAINED_FORMAT,
            "method": method.name,
            "backbone": method.backbone,
            "method_params": plain(method.params),
            "method_config": plain(method.config),  # checked by load_trained
            "trainable_parameters": method.trainable_parameter_count(),
            "train_config": plain(config),
            "history": result.history,
            **(summary or {}),
            "numerics": numerics or describe(),
            "compute": {"precision": config.precision, **(compute or {})},
            "trained": method.trained_state(),
        },
        path,
    )
