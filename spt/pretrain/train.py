"""Pretraining the tiny SAM from random init on natural scenes, with the shared engine.

One training sample = (scene, one of its objects, one prompt), all drawn from a generator keyed
by (seed, scene id, epoch) (:func:`spt.training.engine.sample_key`): the object, a horizontal
flip, and the prompt mode among ``prompt_modes``; the prompt itself is built by the harness's
:func:`spt.harness.prompts.build_prompt` from the object's mask, as at evaluation. Every
parameter of SAM trains (:class:`spt.pretrain.model.PromptedSam`).

Outputs in ``out_dir``:

- ``tiny_sam.pth``: a plain SAM state_dict, loadable by ``spt.sam.load_sam("tiny", path)``;
- ``pretrain_log.json``: the params and their fingerprint, the checkpoint's sha256, loss per
  epoch, seconds spent, and held-out zero-shot mIoU (natural scenes; industrial twins for
  information);
- ``state/last.pt``: the engine's per-epoch checkpoint (``resume=True`` continues from it).

A rerun whose params fingerprint matches the log and whose checkpoint still has the sha256 the
log recorded does nothing. A checkpoint that does not match (corrupt or replaced), or a log that
cannot be read, is reported on stderr and pretraining runs again (with ``resume=True`` the
checkpoint is rebuilt from ``state/last.pt`` without retraining).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam

from spt.artifacts import file_sha256, save_torch, write_text_atomically
from spt.config import PretrainSection, override
from spt.config.schema import build
from spt.data.stable_random import stable_rng, torch_seed
from spt.errors import SuiteError
from spt.harness.prompts import build_prompt_or_box, validate_mode
from spt.numerics import describe
from spt.pretrain.model import PromptedSam
from spt.pretrain.natural import natural_scene
from spt.pretrain.quality import HELDOUT_OFFSET, industrial_probe, natural_probe, probe_miou
from spt.sam import build_sam, get_spec
from spt.sam.backbones import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from spt.training.engine import (
    TRAIN_RULES,
    TrainConfig,
    check_settings,
    sample_key,
    train,
)

BACKBONE = "tiny"
CHECKPOINT_NAME = "tiny_sam.pth"
LOG_NAME = "pretrain_log.json"
# Bump when the scene generator or the sample recipe changes, so old outputs are not reused.
RECIPE_VERSION = 1
# Validation rules (see spt.training.engine.check_settings): the engine's plus pretraining's own.
PRETRAIN_RULES = {
    **TRAIN_RULES,
    "scenes": (True, 1, False),
    "init_seed": (True, 0, False),
    "loss_points": (True, 1, False),
    "iou_loss_weight": (False, 0, False),
    "heldout_scenes": (True, 0, False),
    "industrial_probe_images": (True, 0, False),
}
PRETRAIN_FLAGS = {"scenes": "--scenes", "epochs": "--epochs", "seed": "--seed"}


@dataclass(frozen=True)
class PretrainConfig(PretrainSection):
    """The ``pretrain:`` section of params.yaml (its fields and defaults, the measured recipe,
    are :class:`spt.config.PretrainSection`'s) with the checks that span fields and layers."""

    def __post_init__(self) -> None:
        values = {key: getattr(self, key) for key in PRETRAIN_RULES}
        check_settings(values, PRETRAIN_RULES, "pretrain", PRETRAIN_FLAGS, ("grad_clip",))
        if self.scenes >= HELDOUT_OFFSET:
            raise SuiteError(
                f"pretrain.scenes / --scenes: expected 1..{HELDOUT_OFFSET - 1}, got {self.scenes}"
            )
        if self.batch_size > self.scenes:
            raise SuiteError(
                f"pretrain.batch_size {self.batch_size} is larger than pretrain.scenes / --scenes "
                f"{self.scenes}; lower pretrain.batch_size or raise pretrain.scenes / --scenes"
            )
        if not self.prompt_modes:
            raise SuiteError("pretrain.prompt_modes is empty; name at least one prompt mode")
        for key in ("prompt_modes", "probe_modes"):
            for mode in getattr(self, key):
                if not isinstance(mode, str):
                    raise SuiteError(f"pretrain.{key}: {mode!r} is not a prompt mode name")
                validate_mode(mode)

    @classmethod
    def from_params(
        cls, section: PretrainSection | dict[str, Any] | None, **overrides: Any
    ) -> PretrainConfig:
        """Build from the params section (checked by the schema when given as a mapping);
        command-line ``overrides`` that are None are ignored, the others checked alike."""
        if not isinstance(section, PretrainSection):
            section = build(PretrainSection, section, "params", "pretrain")
        for key, value in overrides.items():
            if value is not None:
                section = override(section, key, value, f"--{key.replace('_', '-')}")
        return cls(**{f.name: getattr(section, f.name) for f in fields(PretrainSection)})

    def train_config(self) -> TrainConfig:
        """The engine's config; everything that shapes the weights enters its fingerprint."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            lr_step_epochs=self.lr_step_epochs,
            lr_gamma=self.lr_gamma,
            warmup_steps=self.warmup_steps,
            grad_clip=self.grad_clip,
            seed=self.seed,
            extra={
                "recipe": f"natural-v{RECIPE_VERSION}",
                "scenes": self.scenes,
                "init_seed": self.init_seed,
                "prompt_modes": list(self.prompt_modes),
                "loss_points": self.loss_points,
                "iou_loss_weight": self.iou_loss_weight,
            },
        )

    def fingerprint(self) -> str:
        """Fingerprint of everything that determines the outputs (weights and probe numbers)."""
        probe = json.dumps([self.heldout_scenes, self.industrial_probe_images, self.probe_modes])
        return (
            f"{self.train_config().fingerprint()}-{hashlib.sha256(probe.encode()).hexdigest()[:8]}"
        )


def scene_id(index: int) -> str:
    return f"natural/{index:06d}"


def normalise(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (S,S,3) already at the input size -> SAM-normalised float32 (1,3,S,S).

    What :func:`spt.harness.preprocess.image_to_input` computes when no resize is needed, in
    numpy: a torch resize per sample costs more than the tiny model's step on a busy CPU.
    """
    planes = (image.astype(np.float32) - np.float32(SAM_PIXEL_MEAN)) / np.float32(SAM_PIXEL_STD)
    return torch.from_numpy(np.ascontiguousarray(planes.transpose(2, 0, 1)))[None]


def make_sample_builder(config: PretrainConfig, size: int, low_res: int):
    """``make_sample(index, epoch)`` for the engine: a pure function of (seed, index, epoch).

    Returns a dict: image (1,3,S,S) normalised, target (1,1,S,S) float {0,1}, prompt (one row),
    key (int, seeds the loss's point sampling).
    Scenes are drawn once and kept (as an image and a label map, ~65 KB each): drawing one costs
    as much as a training step on it, and every epoch revisits them.
    """

    @functools.cache
    def scene_arrays(index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(image (S,S,3) uint8, labels (S,S) uint8 with object k at k+1, object count)."""
        scene = natural_scene(config.seed, index, size)
        labels = np.zeros((size, size), np.uint8)
        for number, mask in enumerate(scene.masks):
            labels[mask] = number + 1  # visible masks are disjoint, so nothing is overwritten
        return scene.image, labels, scene.masks.shape[0]

    def make_sample(index: int, epoch: int) -> dict[str, Any]:
        image_id = scene_id(index)
        key = sample_key(config.seed, image_id, epoch)
        rng = stable_rng(key)
        image, labels, count = scene_arrays(index)
        number = int(rng.integers(count))
        mask = labels == number + 1
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        resized = np.where(mask, 255.0, 0.0).astype(np.float32)
        mode = config.prompt_modes[int(rng.integers(len(config.prompt_modes)))]
        prompt_id = f"{image_id}/{number}/epoch{epoch}"
        prompt = build_prompt_or_box(mode, resized, config.seed, prompt_id, low_res)
        return {
            "image": normalise(image),
            "target": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None],
            "prompt": prompt,
            "key": torch_seed(config.seed, image_id, epoch, "train"),  # = key's low 63 bits
        }

    return make_sample


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples -> the batch :class:`PromptedSam` reads (images and targets stacked)."""
    return {
        "images": torch.cat([s["image"] for s in samples]),
        "targets": torch.cat([s["target"] for s in samples]),
        "prompts": [s["prompt"] for s in samples],
        "keys": [s["key"] for s in samples],
    }


def write_json_atomic(obj: Any, path: Path) -> None:
    """JSON to a temp file in the same folder, then rename: never a partial log."""
    write_text_atomically(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def read_log(out_dir: Path) -> dict[str, Any] | None:
    """The log of a finished run in ``out_dir``, or None when there is none; a log that cannot
    be read or is not a JSON object is reported on stderr and counts as none."""
    path = out_dir / LOG_NAME
    if not path.exists():
        return None
    try:
        log = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        _warn(f"{path}: unreadable log ({type(exc).__name__}); treating the run as not finished")
        return None
    if not isinstance(log, dict):
        _warn(f"{path}: not a pretraining log (a JSON object); treating the run as not finished")
        return None
    return log


def _checkpoint_matches(log: dict[str, Any], path: Path) -> bool:
    """Whether ``path`` is the checkpoint the log describes: its sha256 (recorded since the log
    has one), else (an older log) that it loads as a state dict of tensors."""
    recorded = log.get("checkpoint_sha256")
    if recorded is not None:
        return file_sha256(path) == recorded
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any unreadable file: not the finished checkpoint
        return False
    return isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())


def finished_log(config: PretrainConfig, out_dir: Path) -> dict[str, Any] | None:
    """The log of this config's finished run in ``out_dir`` (checkpoint present and the one the
    log describes), else None."""
    log = read_log(out_dir)
    if log is None or log.get("fingerprint") != config.fingerprint():
        return None
    checkpoint = out_dir / CHECKPOINT_NAME
    if not checkpoint.is_file():
        return None
    if not _checkpoint_matches(log, checkpoint):
        _warn(
            f"{checkpoint}: not the checkpoint {LOG_NAME} describes (corrupt or replaced); "
            "pretraining again (with --resume: rebuilt from state/last.pt)"
        )
        return None
    return log


def probe_quality(sam: Sam, config: PretrainConfig, progress: bool = False) -> dict[str, Any]:
    """Zero-shot mIoU per probe mode on held-out natural scenes and on industrial twins."""
    quality = {
        "natural_heldout": probe_miou(
            sam,
            natural_probe(config.seed, config.heldout_scenes),
            config.probe_modes,
            config.seed,
            progress,
            config.heldout_scenes,
        )
    }
    if config.industrial_probe_images:
        quality["industrial_twins"] = probe_miou(
            sam,
            industrial_probe(config.seed, config.industrial_probe_images),
            config.probe_modes,
            config.seed,
            progress,
            config.industrial_probe_images,
        )
    return quality


def pretrain(
    config: PretrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    device: torch.device | str = "cpu",
    stop_after_epochs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain (or find already pretrained) and return the log dict (see the module doc).

    ``stop_after_epochs`` ends after that many epochs as if killed (no checkpoint or log is
    written then); a later call with ``resume=True`` continues from ``state/last.pt``.
    """
    out_dir = Path(out_dir)
    previous = finished_log(config, out_dir)
    if previous is not None:
        return {**previous, "skipped": True}
    spec = get_spec(BACKBONE)
    sam = build_sam(BACKBONE, seed=config.init_seed)
    model = PromptedSam(sam, config.loss_points, config.iou_loss_weight)
    image_ids = [scene_id(i) for i in range(config.scenes)]
    make_sample = make_sample_builder(config, spec.image_size, spec.low_res_size)
    started = time.perf_counter()
    result = train(
        model,
        image_ids,
        make_sample,
        collate,
        config.train_config(),
        out_dir,
        resume=resume,
        device=device,
        stop_after_epochs=stop_after_epochs,
        progress=progress,
        start_over="rerun without --resume to start over",
    )
    train_seconds = time.perf_counter() - started
    if result.epochs_done < config.epochs:
        return {"epochs_done": result.epochs_done, "history": result.history, "finished": False}
    sam.eval()
    checkpoint = out_dir / CHECKPOINT_NAME
    save_torch({k: v.detach().cpu() for k, v in sam.state_dict().items()}, checkpoint)
    started = time.perf_counter()
    quality = probe_quality(sam, config, progress)
    log = {
        "finished": True,
        "fingerprint": config.fingerprint(),
        "params": asdict(config),
        "checkpoint": CHECKPOINT_NAME,
        "checkpoint_sha256": file_sha256(checkpoint),  # a rerun checks the file against it
        "backbone": BACKBONE,
        "trainable_parameters": result.trainable_parameters,
        "steps": result.steps_done,
        "history": result.history,
        # Seconds of this call only; a resumed run counts the epochs it ran.
        "train_seconds": round(train_seconds, 2),
        "probe_seconds": round(time.perf_counter() - started, 2),
        "torch_threads": torch.get_num_threads(),
        "numerics": describe(str(device)),  # where these bits come from (spt/numerics.py)
        "quality": quality,
    }
    write_json_atomic(log, out_dir / LOG_NAME)
    return log
