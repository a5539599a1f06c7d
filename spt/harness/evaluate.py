"""The evaluation loop: method x dataset x prompt mode -> per-image records and a summary.

Per image: read the RGB image and its 0/255 mask, prepare the model input, run the method's
encoder ONCE, then for every prompt mode build the prompt from the resized mask, decode, resize
the logits to the original mask size and score every output stage. A prompt that cannot be built
becomes a ``no_prompt`` record with its reason.

Resume: images are processed in chunks (per dataset, in image-id order); each finished chunk is
written atomically under ``<out>/parts/`` with a name that hashes everything its results depend
on (method, backbone, checkpoint file, params, seed, modes, protocol, manifest, image ids, and
:func:`record_code_digest`, the source of the code that turns them into records). A rerun skips
chunks whose file exists, then merges the chunks into ``records.parquet`` (atomically) and writes
``summary.csv`` / ``summary.md``.

Several processes: under torchrun each rank scores its share of the chunks and rank 0 merges
them (:mod:`spt.harness.shards`); the merged records do not depend on the number of processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from spt import codegraph, numerics
from spt.artifacts import file_sha256, folder_lock, load_trained, read_examples, save_examples
from spt.data.images import read_mask, read_rgb
from spt.data.manifest import find_manifest, read_manifest, resolve_manifest_path
from spt.data.stable_random import keyed_rank
from spt.errors import SuiteError
from spt.harness.compute import autocast, check_attention, check_precision, peak_memory
from spt.harness.corruptions import corrupt, parse_corruption
from spt.harness.method import Method, build_method, method_class
from spt.harness.metrics import MaskScorer
from spt.harness.preprocess import InputFrame, image_to_input, logits_to_original, mask_to_input
from spt.harness.prompts import (
    DEFAULT_MASK_PROMPT_LOGIT,
    DEFAULT_PROMPT_MODES,
    PromptUnavailable,
    build_prompt,
    validate_mode,
)
from spt.harness.records import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_OUT_ROOT,
    RECORD_COLUMNS,
    RECORD_SCHEMA,
    STATUS_NO_PROMPT,
    STATUS_OK,
    check_output_file,
    read_cost,
    read_numerics,
    records_table,
    write_records,
)
from spt.harness.shards import Shard, current_shard, join, wait_for_all
from spt.harness.summary import write_summary
from spt.sam.attention import set_attention

DEFAULT_PREPARED_ROOT = Path("work/prepared")


@dataclass(frozen=True)
class EvaluationConfig:
    """Everything one evaluation run depends on."""

    method: str
    backbone: str
    datasets: tuple[str, ...]
    checkpoint: str | None = None
    trained: str | None = None  # trained.pt from `spt train` (None: the method as built)
    prompt_modes: tuple[str, ...] = DEFAULT_PROMPT_MODES
    seed: int = 0
    limit: int | None = None  # first N selected images per dataset (image-id order)
    device: str = "cpu"
    prepared_roots: tuple[str, ...] = (str(DEFAULT_PREPARED_ROOT),)  # searched in order
    out_root: str = str(DEFAULT_OUT_ROOT)
    method_params: dict[str, Any] = field(default_factory=dict)
    resize: str = "square"  # input protocol, see spt.harness.preprocess
    instances: bool = False  # one prompt per connected component instead of per image
    mask_prompt_logit: float = DEFAULT_MASK_PROMPT_LOGIT
    chunk_size: int = DEFAULT_CHUNK_SIZE  # images per resumable part file
    example_images: int = 3  # per dataset: predicted masks kept for qualitative figures
    example_modes: tuple[str, ...] = ("box",)  # prompt modes whose example masks are kept
    precision: str = "fp32"  # autocast of encode and decode (spt.harness.compute)
    attention: str = "sam"  # image-encoder attention kernel (spt.sam.attention)
    # "<name>-<severity>" of spt.harness.corruptions, applied to each image as read (None: clean)
    corruption: str | None = None
    folder: str | None = None  # the output folder itself (default <out_root>/<method>/<backbone>)

    @property
    def out_dir(self) -> Path:
        if self.folder is not None:
            return Path(self.folder)
        return Path(self.out_root) / self.method / self.backbone

    def manifest_path(self, dataset: str) -> Path:
        return find_manifest(dataset, self.prepared_roots)


def select_images(manifest: pd.DataFrame, limit: int | None = None) -> pd.DataFrame:
    """Test-split defect images with a non-empty mask, in image-id order, first ``limit``."""
    chosen = manifest[
        (manifest["split"] == "test")
        & (manifest["label"] == "defect")
        & (manifest["mask_pixels"] > 0)
    ].sort_values("image_id", kind="stable")
    return chosen if limit is None else chosen.head(limit)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ImageEvaluator:
    """Scores one method on single images under one configuration."""

    def __init__(self, method: Method, config: EvaluationConfig) -> None:
        self.method = method
        self.config = config
        self.modes = tuple(validate_mode(m) for m in config.prompt_modes)
        self.kept: dict[str, np.ndarray] = {}  # "<image id>|<mode>|<stage>" -> bool (H,W)

    def evaluate(
        self,
        row: pd.Series,
        image: np.ndarray,
        mask: np.ndarray,
        keep: bool = False,
        image_path: Path | None = None,
        mask_path: Path | None = None,
    ) -> list[dict]:
        """Records for one manifest row: len(modes) x len(stages) dicts. With ``keep``, the
        predicted masks of ``config.example_modes`` are stored in ``self.kept``. The paths the
        image and mask were read from (default: the row's) name the files in errors."""
        method, config = self.method, self.config
        if image.shape[:2] != mask.shape:
            image_path = row["image_path"] if image_path is None else image_path
            mask_path = row["mask_path"] if mask_path is None else mask_path
            raise SuiteError(
                f"{row['image_id']}: image {image_path} is {image.shape[1]}x{image.shape[0]} but "
                f"its mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}; rerun `spt prepare`"
            )
        frame = InputFrame.for_image(*mask.shape, method.spec.image_size, config.resize)
        model_input = image_to_input(image, frame, method.device)
        _synchronise(method.device)
        start = time.perf_counter()
        with autocast(method.device, config.precision):
            state = method.encode(model_input)
        _synchronise(method.device)
        encode_seconds = time.perf_counter() - start

        resized_mask = mask_to_input(mask, frame)
        scorer = MaskScorer(mask > 128)
        base = {
            "method": method.name,
            "backbone": method.backbone,
            "seed": config.seed,
            "dataset": row["dataset"],
            "category": row["category"],
            "defect_type": row["defect_type"],
            "image_id": row["image_id"],
            "encode_seconds": encode_seconds,
        }
        records = []
        for mode in self.modes:
            try:
                prompt = build_prompt(
                    mode,
                    resized_mask,
                    config.seed,
                    row["image_id"],
                    method.spec.low_res_size,
                    instances=config.instances,
                    mask_prompt_logit=config.mask_prompt_logit,
                )
            except PromptUnavailable as missing:
                for stage in method.stages:
                    records.append(_no_prompt(base, mode, stage, missing.reason))
                continue
            start = time.perf_counter()
            with autocast(method.device, config.precision):
                outputs = method.decode(state, prompt)
            _synchronise(method.device)
            seconds = time.perf_counter() - start
            for stage in method.stages:
                logits = logits_to_original(outputs[stage].float(), frame)  # scored in fp32
                # Instance prompts (N > 1) are merged into one prediction: the union of masks.
                predicted = (logits.amax(dim=0)[0] > 0).cpu().numpy()
                if keep and mode in config.example_modes:
                    self.kept[f"{row['image_id']}|{mode}|{stage}"] = predicted
                scores = scorer.score(predicted)
                records.append(
                    {**base, "prompt_mode": mode, "stage": stage, **scores}
                    | {"seconds": seconds, "status": STATUS_OK, "reason": ""}
                )
        return records


def example_ids(image_ids: Sequence[str], seed: int, count: int) -> set[str]:
    """The ``count`` images of a dataset whose predictions are kept for figures: the smallest
    keyed hashes, so every method keeps the same images whatever their order."""

    return set(
        sorted(image_ids, key=lambda image_id: keyed_rank(seed, image_id, "example"))[:count]
    )


def _no_prompt(base: dict, mode: str, stage: str, reason: str) -> dict:
    nan = float("nan")
    return base | {
        "prompt_mode": mode,
        "stage": stage,
        "iou": nan,
        "biou": nan,
        "dice": nan,
        "seconds": nan,
        "status": STATUS_NO_PROMPT,
        "reason": reason,
    }


def _checkpoint_identity(checkpoint: str | None) -> dict:
    if checkpoint is None:
        return {"path": None}
    path = Path(checkpoint)
    stat = path.stat() if path.is_file() else None
    return {
        "path": str(path.resolve()),
        "size": stat.st_size if stat else None,
        "mtime_ns": stat.st_mtime_ns if stat else None,
    }


def weights_identity(config: EvaluationConfig) -> dict:
    """What the numbers were computed with: the SAM checkpoint and the trained weights (path
    and sha256 each, or None), SPT's official checkpoint when a param names one, and whether
    the base SAM is a random initialisation (no checkpoint at all)."""

    def described(path: str | None) -> dict | None:
        if path is None:
            return None
        file = Path(path)
        return {"path": file.as_posix(), "sha256": file_sha256(file) if file.is_file() else None}

    official = config.method_params.get("official_checkpoint") or None
    return {
        "backbone": config.backbone,
        "checkpoint": described(config.checkpoint),
        "trained": described(config.trained),
        "official_checkpoint": described(str(official)) if official else None,
        "random_base": random_base(config),
    }


def random_base(config: EvaluationConfig) -> bool:
    """Whether the base SAM is a random initialisation: no checkpoint, no official one."""
    return config.checkpoint is None and not config.method_params.get("official_checkpoint")


def weights_line(weights: dict) -> str:
    """One line for summary.md: which weights the numbers measure."""

    def named(entry: dict) -> str:
        digest = entry["sha256"][:12] if entry.get("sha256") else "file missing"
        return f"`{entry['path']}` (sha256 {digest})"

    if weights.get("official_checkpoint"):
        base = f"SPT's official checkpoint {named(weights['official_checkpoint'])}"
    elif weights.get("random_base"):
        base = f"a RANDOMLY INITIALISED {weights['backbone']} SAM (no checkpoint)"
    else:
        base = f"SAM {weights['backbone']} from {named(weights['checkpoint'])}"
    if weights.get("trained"):
        return f"Weights: {base}, with the trained weights {named(weights['trained'])}"
    return f"Weights: {base}"


def record_code_digest(method: str) -> str:
    """sha256 of the source of this module, everything it imports, and the module defining
    ``method`` with everything that imports (:func:`spt.codegraph.source_digest`): prompts,
    input protocol, metrics, record layout and the method's model code."""
    return codegraph.source_digest([__name__, method_class(method).__module__])


def _part_name(
    config: EvaluationConfig, dataset: str, manifest_hash: str, ids: Sequence[str], code: str
) -> str:
    """File name of one chunk: dataset plus a hash of what its records depend on."""
    identity = asdict(config)
    identity["code"] = code
    for key in (
        "datasets",
        "limit",
        "out_root",
        "folder",
        "prepared_roots",
        "chunk_size",
        "device",
    ):
        identity.pop(key)  # change neither the prompts nor the metrics of a given image
    identity["checkpoint"] = _checkpoint_identity(config.checkpoint)
    identity["trained"] = _checkpoint_identity(config.trained)
    identity |= {"dataset": dataset, "manifest": manifest_hash, "image_ids": list(ids)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    return f"{dataset}-{digest.hexdigest()[:20]}.parquet"


def evaluate(config: EvaluationConfig, progress: bool = True, method: Method | None = None) -> Path:
    """Run (or resume) one evaluation; return the path of the merged records file. The output
    folder is locked meanwhile (:func:`spt.artifacts.folder_lock`). Under torchrun every rank
    calls it; rank 0 returns once the merged file is written, the others once their chunks are
    (the path they return is written by rank 0).

    ``method``: the model of ``config`` already built by :func:`load_method` (several
    evaluations of one model, e.g. `spt robustness`, load it once); built here when None."""
    check_precision(config.precision, "evaluate.precision / --precision")
    check_attention(config.attention, "evaluate.attention / --attention")
    if config.corruption is not None:
        parse_corruption(config.corruption)  # a bad label fails before any work
    shard = current_shard()
    config = replace(config, device=shard.device(config.device))
    plans = _plans(config)
    join(shard, config.device)
    # rank 0 alone holds the lock: it merges, and other ranks write only their own chunks
    lock = folder_lock(config.out_dir, "evaluate") if shard.is_main else contextlib.nullcontext()
    with lock:
        return _run(config, plans, progress, shard, method)


def _plans(config: EvaluationConfig) -> list:
    """(dataset, manifest folder, manifest hash, rows to score) per dataset, all checked
    before anything is written."""
    if not config.datasets:
        raise SuiteError("no datasets to evaluate; pass --datasets NAME [NAME ...]")
    repeated = sorted({d for d in config.datasets if config.datasets.count(d) > 1})
    if repeated:
        raise SuiteError(f"dataset(s) {', '.join(repeated)} given more than once in --datasets")
    for mode in config.prompt_modes:
        validate_mode(mode)
    plans = []
    for dataset in config.datasets:
        manifest_path = config.manifest_path(dataset)
        manifest = read_manifest(manifest_path)
        manifest_hash = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
        rows = select_images(manifest, config.limit)
        if rows.empty:
            raise SuiteError(
                f"{manifest_path}: no test-split defect images with a non-empty mask to evaluate"
            )
        plans.append((dataset, manifest_path.parent, manifest_hash, rows))
    check_output_file(config.out_dir / "records.parquet")  # before any work, not after it
    return plans


def load_method(config: EvaluationConfig) -> Method:
    """The method ``config`` scores: built, its trained weights loaded, its attention kernel
    set; warns (once) when the base SAM is a random initialisation."""
    method = build_method(
        config.method,
        config.backbone,
        checkpoint=config.checkpoint,
        device=config.device,
        params=config.method_params,
    )
    if config.trained is not None:
        load_trained(method, config.trained)
    for module in method.torch_modules():
        set_attention(module, config.attention)
    if random_base(config):  # said once the weights are known to load
        print(
            f"warning: evaluating {config.method} on a randomly initialised "
            f"{config.backbone} SAM (no checkpoint): the numbers measure no pretrained "
            "model; set pipeline.sam_checkpoint (or sam.checkpoints)",
            file=sys.stderr,
        )
    return method


def _run(
    config: EvaluationConfig, plans: list, progress: bool, shard: Shard, given: Method | None
) -> Path:
    code = record_code_digest(config.method)
    weights = weights_identity(config)

    records_path = config.out_dir / "records.parquet"
    run_numerics = numerics.describe(config.device)
    parts_dir = config.out_dir / "parts"
    part_files: list[Path] = []
    cached: dict[Path, tuple[pa.Table, dict]] = {}  # earlier runs' chunks: records, examples
    method: Method | None = None

    def cost() -> dict:  # what a chunk cost beyond its timing columns, at the time it is written
        return {
            "device": config.device,
            "precision": config.precision,
            "attention": config.attention,
            "processes": shard.world,
            **peak_memory(config.device),
        }

    rank_label = f"[rank {shard.rank}/{shard.world}] " if shard.world > 1 else ""
    chunk_index = -1  # over the whole run: chunk i belongs to rank i mod world
    for dataset, manifest_dir, manifest_hash, rows in plans:
        chunks = [
            rows.iloc[i : i + config.chunk_size] for i in range(0, len(rows), config.chunk_size)
        ]
        todo = []
        for chunk in chunks:
            chunk_index += 1
            ids = list(chunk["image_id"])
            part = parts_dir / _part_name(config, dataset, manifest_hash, ids, code)
            part_files.append(part)
            if not shard.owns(chunk_index):
                continue  # its owner checks and writes it; rank 0 reads it at the merge
            earlier = _cached_part(part) if part.exists() else None
            if earlier is None:
                todo.append((chunk, part))
            else:
                cached[part] = earlier
        if not todo:
            continue
        if method is None:
            method = given if given is not None else load_method(config)
            evaluator = ImageEvaluator(method, config)
        bar = tqdm(
            total=sum(len(chunk) for chunk, _ in todo),
            desc=f"{rank_label}{config.method}/{config.backbone} {dataset}",
            unit="img",
            disable=not progress,
        )
        keep = example_ids(list(rows["image_id"]), config.seed, config.example_images)
        with bar, torch.inference_mode():
            for chunk, part in todo:
                records = []
                evaluator.kept = {}
                for _, row in chunk.iterrows():
                    if not row["mask_path"]:
                        raise SuiteError(
                            f"{config.manifest_path(dataset)}: {row['image_id']} has "
                            "mask_pixels > 0 but no mask_path; rerun `spt prepare`"
                        )
                    image_path = resolve_manifest_path(row["image_path"], manifest_dir)
                    mask_path = resolve_manifest_path(row["mask_path"], manifest_dir)
                    # the image must still be the file `spt prepare` hashed
                    image = read_rgb(image_path, row.get("image_sha256") or None)
                    mask = read_mask(mask_path, row.get("prepared_mask_sha256") or None)
                    if config.corruption is not None:  # what the camera delivered, degraded
                        name, severity = parse_corruption(config.corruption)
                        image = corrupt(
                            image, name, severity, seed=config.seed, image_id=row["image_id"]
                        )
                    records.extend(
                        evaluator.evaluate(
                            row, image, mask, row["image_id"] in keep, image_path, mask_path
                        )
                    )
                    bar.update(1)
                # Examples first: the records part marks the chunk as done.
                save_examples(evaluator.kept, _examples_part(part))
                write_records(records_table(records), part, run_numerics, cost=cost())

    wait_for_all(shard)
    if not shard.is_main:
        return records_path
    merged = pa.concat_tables([cached[p][0] if p in cached else _read_part(p) for p in part_files])
    merged_numerics = _merged_numerics(run_numerics, part_files)
    write_records(merged, records_path, merged_numerics, weights, _merged_cost(part_files))
    write_summary(
        merged.to_pandas(),
        config.out_dir,
        numerics.summary_line(merged_numerics),
        weights_line(weights),
    )
    examples: dict[str, np.ndarray] = {}
    for part in part_files:
        if part in cached:
            examples.update(cached[part][1])
        elif _examples_part(part).is_file():
            examples.update(read_examples(_examples_part(part)))
    save_examples(examples, config.out_dir / "examples.npz")
    return records_path


def _merged_cost(part_files: list[Path]) -> dict | None:
    """The cost of the merged records: the chunks' settings and the largest peak memory of the
    processes that computed them (None when a chunk has no cost, from an older suite)."""
    costs = [read_cost(part) for part in part_files]
    if not costs or any(c is None for c in costs):
        return None
    merged = dict(costs[-1])
    merged["peak_memory_bytes"] = max(int(c.get("peak_memory_bytes", 0)) for c in costs)
    for key in ("device", "precision", "attention", "peak_memory_kind"):
        values = sorted({str(c.get(key)) for c in costs})
        merged[key] = values[0] if len(values) == 1 else "mixed: " + ", ".join(values)
    merged["processes"] = max(int(c.get("processes", 1)) for c in costs)
    return merged


def _merged_numerics(run_numerics: dict, part_files: list[Path]) -> dict:
    """The numerics of the merged records: this run's, unless chunks cached by an earlier run
    were computed under other numerics (a resume on another machine), which is then said."""
    others = []
    for part in part_files:
        saved = read_numerics(part)
        if saved is None or numerics.mismatches(saved, run_numerics):
            others.append(part.name)
    if not others:
        return run_numerics
    return {
        **run_numerics,
        "mode": f"mixed ({len(others)} chunk(s) computed under other or unknown numerics)",
    }


def _examples_part(part: Path) -> Path:
    return part.with_name(part.stem + ".examples.npz")


def _read_part(part: Path) -> pa.Table:
    """A chunk's records, exactly :data:`RECORD_SCHEMA`; a ValueError / OSError if it is not."""
    if part.is_dir():
        raise IsADirectoryError("a directory, not a parquet file")
    table = pq.read_table(part)
    missing = [c for c in RECORD_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"no column(s) {', '.join(missing)}")
    table = table.select(RECORD_COLUMNS)
    if not table.schema.equals(RECORD_SCHEMA):
        raise ValueError("column types differ from the records schema")
    return table


def _cached_part(part: Path) -> tuple[pa.Table, dict[str, np.ndarray]] | None:
    """The records and examples of a chunk an earlier run wrote, or None when it must be
    recomputed.

    Parts are the suite's own cache, so a damaged one (an interrupted copy, a full disk, a
    file from another version) is no reason to stop: it is moved aside, never deleted, with a
    one-line warning, and its chunk is computed again. Its examples file counts too, as the
    records part (written after it) marks the whole chunk as done.
    """
    try:
        table = _read_part(part)
    except Exception as exc:  # any way of being unreadable: pyarrow, OSError, wrong columns
        _set_aside(part, exc)
        return None
    examples_path = _examples_part(part)
    examples: dict[str, np.ndarray] = {}
    if examples_path.exists():
        try:
            examples = read_examples(examples_path)
        except Exception as exc:  # zip, numpy or key errors of a damaged archive
            _set_aside(examples_path, exc)
            return None
    return table, examples


def _set_aside(path: Path, exc: Exception) -> None:
    """Rename a damaged cache file to ``<name>.corrupt`` (``.corrupt.1``... if taken) and say so
    in one line; nothing is deleted."""
    target = path.with_name(path.name + ".corrupt")
    index = 0
    while target.exists():
        index += 1
        target = path.with_name(f"{path.name}.corrupt.{index}")
    os.replace(path, target)
    lines = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__
    print(
        f"warning: {path}: unreadable cached chunk ({reason}); moved to {target.name}, "
        "recomputing it",
        file=sys.stderr,
    )
