"""Training samples: one augmented image, target and prompt per (seed, image id, epoch).

Every sample is a pure function of its key: the same (seed, image id, epoch) gives the same
flip, jitter, prompt mode, prompt and method key on any machine, in any process, in any order.

Per sample (defaults in params.yaml ``train.augment``):

1. Read the image and its normalised mask; resize both to the S x S model input as evaluation
   does (bilinear, no aspect preserved; mask as float, foreground > 128).
2. Horizontal flip with probability ``hflip``.
3. Large-scale jitter with probability ``lsj_prob`` (scale in ``lsj_scale``). If the jitter
   crops the whole defect away, the un-jittered sample is used (a target without foreground
   teaches nothing and admits no prompt).
4. A prompt mode drawn from ``prompt_modes``; the prompt is built from the augmented target with
   the harness's own prompt code, keyed by ``<image id>#<epoch>`` so it changes each epoch. A
   mode that cannot be built (a defect too small for 5 points) falls back to ``box``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spt.harness.evaluate import read_mask, read_rgb
from spt.harness.method import TrainingSample
from spt.harness.preprocess import InputFrame, mask_to_input, normalise_planes
from spt.harness.prompts import PromptUnavailable, build_prompt, validate_mode
from spt.sam.backbones import BackboneSpec
from spt.training.augment import large_scale_jitter, random_hflip
from spt.training.engine import sample_key

TRAIN_PROMPT_MODES = ("box", "points-1", "points-3", "points-5", "coarse")


@dataclass(frozen=True)
class SampleOptions:
    """How training samples are drawn (params.yaml ``train.prompt_modes`` / ``train.augment``)."""

    seed: int = 0
    prompt_modes: tuple[str, ...] = TRAIN_PROMPT_MODES
    hflip: float = 0.5
    lsj_prob: float = 1.0
    lsj_scale: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        for mode in self.prompt_modes:
            validate_mode(mode)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(H,W,3) uint8 image and (H,W) 0/255 mask -> the same at (size, size), as evaluation does."""
    frame = InputFrame.for_image(image.shape[0], image.shape[1], size)
    planes = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(
        planes, size=(size, size), mode="bilinear", align_corners=False
    )
    image_s = resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    mask_s = np.where(mask_to_input(mask, frame) > 128, 255, 0).astype(np.uint8)
    return image_s, mask_s


def normalise(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(S,S,3) uint8 -> (1,3,S,S) float32 with SAM's pixel mean and std."""
    planes = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    return normalise_planes(planes)


class TrainingSet:
    """The training split as a function (index, epoch) -> :class:`TrainingSample`.

    ``rows``: manifest rows (image_id, image_path, mask_path), paths already resolved.
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        spec: BackboneSpec,
        options: SampleOptions,
        device: torch.device | str = "cpu",
    ) -> None:
        self.rows = rows.reset_index(drop=True)
        self.image_ids = list(self.rows["image_id"])
        self.spec = spec
        self.options = options
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __call__(self, index: int, epoch: int) -> TrainingSample:
        row = self.rows.iloc[index]
        image_id = str(row["image_id"])
        opts = self.options
        rng = np.random.default_rng(sample_key(opts.seed, image_id, epoch, "augment"))
        image, mask = resize_pair(
            read_rgb(Path(row["image_path"])),
            read_mask(Path(row["mask_path"])),
            self.spec.image_size,
        )
        image, mask, _ = random_hflip(image, mask, rng, p=opts.hflip)
        if rng.random() < opts.lsj_prob:
            jittered, jittered_mask, _ = large_scale_jitter(
                image, mask, rng, output_size=self.spec.image_size, scale_range=opts.lsj_scale
            )
            if (jittered_mask > 128).any():
                image, mask = jittered, jittered_mask
        mode = opts.prompt_modes[int(rng.integers(len(opts.prompt_modes)))]
        prompt_id = f"{image_id}#{epoch}"
        try:
            prompt = build_prompt(
                mode, mask.astype(np.float32), opts.seed, prompt_id, self.spec.low_res_size
            )
        except PromptUnavailable:
            prompt = build_prompt(
                "box", mask.astype(np.float32), opts.seed, prompt_id, self.spec.low_res_size
            )
        target = torch.from_numpy((mask > 128).astype(np.float32))[None, None].to(self.device)
        return TrainingSample(
            image_id=image_id,
            image=normalise(image, self.device),
            image_uint8=image,
            target=target,
            prompt=prompt,
            key=sample_key(opts.seed, image_id, epoch, "method") >> 1,  # 63 bits: a torch seed
        )
