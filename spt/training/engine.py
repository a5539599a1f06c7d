"""The training engine every trainable method shares: order, steps, checkpoints, resume, DDP.

What it guarantees:

- **Determinism.** The order of the training set in epoch ``e`` is a pure function of
  (seed, epoch, image ids); each sample is built from a generator keyed by (seed, image id, epoch)
  (see :func:`sample_key`). Nothing depends on the number of processes or on a loader's order.
- **Scale-out.** Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
  DistributedDataParallel (gloo on CPU, nccl on CUDA). A global batch of ``batch_size`` samples is
  split into equal per-rank shares; DDP averages gradients, so N processes see the same global
  batches as one process with the same ``batch_size``.
- **Resume.** After every epoch an atomic checkpoint (``state/last.pt``) holds the trainable
  tensors, optimizer, scheduler, RNG states and the config fingerprint; ``resume=True`` continues
  exactly where the last finished epoch ended. A run killed mid-epoch redoes that epoch only.

A model is any ``nn.Module`` whose ``forward(batch)`` returns a dict of scalar tensors with a
``"loss"`` entry; its trainable tensors are the parameters with ``requires_grad``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from spt.artifacts import assign_named_tensors, save_torch, write_text_atomically
from spt.config.checks import is_number, range_text
from spt.data.stable_random import keyed_int, torch_seed
from spt.errors import SuiteError
from spt.harness.compute import autocast, check_precision, grad_scaler, peak_memory
from spt.harness.shards import Shard, current_shard, join

# Validation rules of the optimisation knobs: key -> (integer?, lower bound, bound excluded?).
TRAIN_RULES: dict[str, tuple[bool, float, bool]] = {
    "epochs": (True, 1, False),
    "batch_size": (True, 1, False),
    "lr": (False, 0, True),
    "weight_decay": (False, 0, False),
    "lr_step_epochs": (True, 1, False),
    "lr_gamma": (False, 0, True),
    "warmup_steps": (True, 0, False),
    "grad_clip": (False, 0, False),  # 0 or null: off
    "seed": (True, 0, False),
}
TRAIN_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "seed": "--seed"}


def check_settings(
    values: Mapping[str, Any],
    rules: Mapping[str, tuple[bool, float, bool]],
    prefix: str,
    flags: Mapping[str, str] | None = None,
    nullable: Sequence[str] = (),
) -> None:
    """Raise a one-line SuiteError naming ``<prefix>.<key>`` (and its flag) for the first value
    of ``values`` that breaks its rule: wrong type (bools and text are not numbers), not finite,
    or below the bound. Keys in ``nullable`` may also be None."""
    flags = flags or {}
    for key, (integer, low, strict) in rules.items():
        value = values[key]
        if value is None and key in nullable:
            continue
        if is_number(value, integer, minimum=low, min_open=strict):
            continue
        name = f"{prefix}.{key}" + (f" / {flags[key]}" if key in flags else "")
        expected = range_text("an integer" if integer else "a number", low, None, strict, False)
        off = " (or null: off)" if key in nullable else ""
        raise SuiteError(f"{name}: expected {expected}{off}, got {value!r}{_text_hint(value)}")


def _text_hint(value: Any) -> str:
    """For text that reads as a number (quoted, or YAML 1.1's 1e-3), how to write the number."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    plain = str(int(number)) if number.is_integer() else repr(number)
    return f" (text, not a number: write {plain})"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation knobs (params.yaml ``train.*``); defaults follow the official SPT recipe.

    Every knob is checked when the config is made: a bad value is a SuiteError naming its key.
    """

    epochs: int = 16
    batch_size: int = 1  # global batch, split evenly over processes
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_step_epochs: int = 10  # StepLR step (x gamma at epoch 10)
    lr_gamma: float = 0.1
    warmup_steps: int = 0  # linear warm-up of the lr (WeSAM uses 250)
    grad_clip: float | None = 0.0  # 0 or None: off
    seed: int = 0
    precision: str = "fp32"  # autocast of the forward: fp32, bf16 or fp16 (spt.harness.compute)
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific, part of the fingerprint

    def __post_init__(self) -> None:
        values = {key: getattr(self, key) for key in TRAIN_RULES}
        check_settings(values, TRAIN_RULES, "train", TRAIN_FLAGS, nullable=("grad_clip",))
        check_precision(self.precision, "train.precision / --precision")
        if not isinstance(self.extra, dict):
            raise SuiteError(f"train extra: expected a mapping, got {self.extra!r}")

    def fingerprint(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def sample_key(seed: int, image_id: str, epoch: int, purpose: str = "train") -> int:
    """A 64-bit seed that depends only on (seed, image id, epoch, purpose)."""
    return keyed_int(seed, image_id, epoch, purpose)


def epoch_order(image_ids: Sequence[str], seed: int, epoch: int) -> list[int]:
    """Indices of ``image_ids`` in this epoch's order: sorted by a keyed hash, not by position."""
    keys = [sample_key(seed, image_id, epoch, "order") for image_id in image_ids]
    return sorted(range(len(image_ids)), key=lambda i: (keys[i], image_ids[i]))


def init_distributed(device: torch.device) -> Shard:
    """This process's place among torchrun's processes, joining their group if there are any."""
    shard = current_shard()
    join(shard, device, timeout=None)
    return shard


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors training changes: every parameter with requires_grad, detached, on CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    try:
        assign_named_tensors(params, tensors, "this model (saved by another method or config?)")
    except SuiteError as exc:
        raise SuiteError(f"{source}: {exc}") from None


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and tuples, so the checkpoint loads with weights_only=True.

    The suite draws nothing from global RNGs (samples use keyed generators); these are saved so
    that third-party code that does (dropout, a library's augmentation) also resumes exactly.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def _seed_global_rngs(seed: int, rank: int) -> None:
    """A new run starts the global RNGs from (training seed, rank): the suite draws nothing from
    them, but their saved states (``rng`` in state/last.pt) are then the same bytes on every
    run, so the state file, and DVC's hash of the training folder, do not change run to run."""
    torch.manual_seed(torch_seed(seed, "global rngs", rank))
    np.random.seed(keyed_int(seed, "global rngs", rank) % 2**32)
    random.seed(keyed_int(seed, "global rngs", rank))


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


_STATE_KEYS = ("epoch", "fingerprint", "trainable", "optimizer", "scheduler", "rng", "history")


def _load_state(path: Path, start_over: str) -> dict[str, Any]:
    """The resume state in ``path``; an unreadable or foreign file is a SuiteError (kept as is:
    the user decides to start over, which replaces it)."""
    fix = f"{start_over} (the file is then replaced)"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, random bytes, unsafe pickle: the same one-line answer
        raise SuiteError(
            f"{path}: unreadable training state ({type(exc).__name__}); {fix}"
        ) from None
    if not isinstance(saved, dict) or any(key not in saved for key in _STATE_KEYS):
        raise SuiteError(f"{path}: not a training state written by `spt train`; {fix}")
    return saved


def _lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """lr multiplier at optimizer step s: linear warm-up, then step decay by epoch."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        epoch = step // max(1, steps_per_epoch)
        return warm * config.lr_gamma ** (epoch // config.lr_step_epochs)

    return factor


COST_COLUMNS = (
    "epoch", "seconds", "steps", "seconds_per_step", "peak_memory_bytes", "peak_memory_kind",
)  # fmt: skip


def write_cost_log(path: Path, costs: list[dict[str, Any]]) -> None:
    """The cost of each finished epoch, as CSV. Timings differ run to run, so they live in
    their own file: the checkpoint, ``trained.pt`` and ``train_log.csv`` stay byte-identical
    between two runs (and so does the hash DVC takes of the training folder)."""
    lines = [",".join(COST_COLUMNS)]
    lines += [",".join(str(row[c]) for c in COST_COLUMNS) for row in costs]
    write_text_atomically(path, "\n".join(lines) + "\n")


def read_cost_log(path: Path | None) -> list[dict[str, Any]]:
    """The rows :func:`write_cost_log` wrote; [] for no file or one that does not parse (a
    resumed run then logs the cost of its own epochs only)."""
    if path is None or not Path(path).is_file():
        return []
    try:
        lines = Path(path).read_text().splitlines()
        if tuple(lines[0].split(",")) != COST_COLUMNS:
            return []
        rows = []
        for line in lines[1:]:
            values = dict(zip(COST_COLUMNS, line.split(","), strict=True))
            rows.append(
                {
                    "epoch": int(values["epoch"]),
                    "seconds": float(values["seconds"]),
                    "steps": int(values["steps"]),
                    "seconds_per_step": float(values["seconds_per_step"]),
                    "peak_memory_bytes": int(values["peak_memory_bytes"]),
                    "peak_memory_kind": values["peak_memory_kind"],
                }
            )
        return rows
    except (OSError, IndexError, ValueError):
        return []


@dataclass
class TrainResult:
    epochs_done: int
    steps_done: int
    history: list[dict[str, float]]
    trainable_parameters: int
    #: per finished epoch: wall seconds, steps, seconds per step and the peak memory so far
    #: (kept apart from ``history``, which is deterministic: see :func:`write_cost_log`)
    costs: list[dict[str, Any]] = field(default_factory=list)


def train(
    model: nn.Module,
    image_ids: Sequence[str],
    make_sample: Callable[[int, int], dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], Any],
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    device: torch.device | str = "cpu",
    stop_after_epochs: int | None = None,
    progress: bool = True,
    start_over: str = "rerun with --restart to start over",
    cost_log: Path | None = None,
) -> TrainResult:
    """Train ``model`` on the samples ``make_sample(index, epoch)`` of ``image_ids``.

    ``make_sample`` must be a pure function of (index, epoch) and the config seed;
    ``collate`` turns this rank's share of a global batch into the model's ``batch`` argument.
    ``stop_after_epochs`` ends the run early (as if killed after that epoch's checkpoint).
    ``start_over``: how the calling command discards a state that cannot be resumed.
    ``cost_log``: a CSV that gets each finished epoch's wall time and peak memory (rank 0).
    """
    out_dir = Path(out_dir)
    device = torch.device(device)
    info = init_distributed(device)
    if config.batch_size % info.world:
        raise SuiteError(
            f"train.batch_size {config.batch_size} is not divisible by the {info.world} "
            "processes; set a multiple of the process count"
        )
    if len(image_ids) < config.batch_size:
        raise SuiteError(
            f"only {len(image_ids)} training images for a batch of {config.batch_size}; "
            "lower train.batch_size / --batch-size or add training data"
        )
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SuiteError("this method has no trainable parameters; nothing to train")
    n_trainable = sum(p.numel() for p in params)
    steps_per_epoch = len(image_ids) // config.batch_size  # the ragged tail is dropped
    # fused: one kernel whose square root is exact on every CPU; the default (foreach) Adam
    # takes MKL's CPU-dependent float32 sqrt (spt/numerics.py)
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, steps_per_epoch))
    state_path = out_dir / "state" / "last.pt"
    start_epoch, history, costs = 0, [], []
    scaler = grad_scaler(device, config.precision)

    if not (resume and state_path.is_file()):
        _seed_global_rngs(config.seed, info.rank)
    if resume and state_path.is_file():
        saved = _load_state(state_path, start_over)
        if saved["fingerprint"] != config.fingerprint():
            raise SuiteError(
                f"{state_path}: saved by a run with other training params; {start_over} "
                "(or restore the params it was made with)"
            )
        load_trainable_state(model, saved["trainable"], state_path)
        try:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            _set_rng_state(saved["rng"])
            if saved.get("scaler") and scaler.is_enabled():  # {} when saved without fp16
                scaler.load_state_dict(saved["scaler"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            raise SuiteError(
                f"{state_path}: damaged training state ({type(exc).__name__}); {start_over} "
                "(the file is then replaced)"
            ) from None
        start_epoch, history = saved["epoch"], saved["history"]
        costs = [row for row in read_cost_log(cost_log) if row["epoch"] <= start_epoch]

    wrapped: nn.Module = model
    if info.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    share = config.batch_size // info.world
    last_epoch = (
        config.epochs if stop_after_epochs is None else min(config.epochs, stop_after_epochs)
    )
    model.train()
    for epoch in range(start_epoch, last_epoch):
        order = epoch_order(image_ids, config.seed, epoch)
        started = time.perf_counter()
        sums: dict[str, float] = {}
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not (progress and info.is_main),
            leave=False,
        )
        for step in bar:
            global_batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            mine = global_batch[info.rank * share : (info.rank + 1) * share]
            batch = collate([make_sample(i, epoch) for i in mine])
            with autocast(device, config.precision):
                losses = wrapped(batch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise SuiteError(
                    f"training loss became {loss.item()} at epoch {epoch + 1} step {step + 1}; "
                    "lower train.lr"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # fp32 and bf16: the loss itself (scaler disabled)
            if config.grad_clip:  # 0 or None: off
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)  # fp16: skips the step when a gradient overflowed
            scaler.update()
            scheduler.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        record.update({k: v / max(1, steps_per_epoch) for k, v in sums.items()})
        history.append(record)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        costs.append(
            {
                "epoch": epoch + 1,
                "seconds": seconds,
                "steps": steps_per_epoch,
                "seconds_per_step": seconds / max(1, steps_per_epoch),
                **peak_memory(device),
            }
        )
        if info.is_main:
            save_torch(
                {
                    "epoch": epoch + 1,
                    "fingerprint": config.fingerprint(),
                    "trainable": trainable_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(),
                    "history": history,
                    "scaler": scaler.state_dict(),
                },
                state_path,
            )
            if cost_log is not None:
                write_cost_log(cost_log, costs)
        if info.world > 1:
            dist.barrier()
    model.eval()
    done = min(last_epoch, config.epochs)
    return TrainResult(done, done * steps_per_epoch, history, n_trainable, costs)
