"""Training samples: one augmented image, target and prompt per (seed, image id, epoch).

Every sample is a pure function of its key: the same (seed, image id, epoch) gives the same
flip, jitter, prompt mode, prompt and method key on any machine, in any process, in any order.

Per sample (defaults in params.yaml ``train.augment``):

1. Read the image and its normalised mask and resize both with the harness's own input path
   (:mod:`spt.harness.preprocess`, the ``resize`` protocol of evaluation: ``square`` or
   ``longest-side``): the image as unrounded float pixels, the mask as float with foreground
   > 128. With no augmentation the sample's image is exactly what evaluation feeds the model
   (padding bottom / right, 0 after normalisation).
2. Horizontal flip with probability ``hflip``.
3. Large-scale jitter with probability ``lsj_prob`` (scale in ``lsj_scale``) of the resized
   content, padded with black as HQ-SAM's recipe does. If the jitter crops the whole defect
   away, the un-jittered sample is used (a target without foreground teaches nothing and admits
   no prompt); such samples are counted in ``jitter_fallbacks``.
4. A prompt mode drawn from ``prompt_modes``; the prompt is built from the augmented target with
   the harness's own prompt code, keyed by ``<image id>#<epoch>`` so it changes each epoch. A
   mode that cannot be built (a defect too small for 5 points) falls back to ``box``.

Before training, :class:`TrainingSet` screens every row once: image and mask must have the same
size (else a SuiteError, as in evaluation), and an image whose mask is empty, or whose defect
vanishes at S x S (a few pixels in a large image), admits no prompt: it is left out and listed
in ``skipped`` with the reason, so every epoch and every process sees the same set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from spt.data.images import check_unchanged, read_mask, read_rgb
from spt.data.stable_random import torch_seed
from spt.errors import SuiteError
from spt.harness.method import TrainingSample
from spt.harness.preprocess import (
    InputFrame,
    image_content,
    mask_to_input,
    normalise_planes,
)
from spt.harness.prompts import (
    PromptUnavailable,
    build_prompt,
    build_prompt_or_box,
    validate_mode,
)
from spt.sam.backbones import SAM_PIXEL_MEAN, BackboneSpec
from spt.training.augment import large_scale_jitter, random_hflip, to_uint8
from spt.training.engine import sample_key

TRAIN_PROMPT_MODES = ("box", "points-1", "points-3", "points-5", "coarse")


@dataclass(frozen=True)
class SampleOptions:
    """How training samples are drawn (params.yaml ``train.prompt_modes`` / ``train.augment``)."""

    seed: int = 0
    prompt_modes: tuple[str, ...] = TRAIN_PROMPT_MODES
    resize: str = "square"  # the input protocol, as evaluate.resize
    hflip: float = 0.5
    lsj_prob: float = 1.0
    lsj_scale: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        if not self.prompt_modes:
            raise SuiteError("train.prompt_modes is empty; name at least one prompt mode")
        for mode in self.prompt_modes:
            if not isinstance(mode, str):
                raise SuiteError(f"train.prompt_modes: {mode!r} is not a prompt mode name")
            validate_mode(mode)
        for key in ("hflip", "lsj_prob"):
            value = getattr(self, key)
            if not _is_number(value) or not 0 <= value <= 1:
                raise SuiteError(
                    f"train.augment.{key}: expected a probability in [0, 1], got {value!r}"
                )
        scale = self.lsj_scale
        if not (len(scale) == 2 and all(_is_number(v) for v in scale) and 0 < scale[0] <= scale[1]):
            raise SuiteError(
                f"train.augment.lsj_scale: expected [low, high] with 0 < low <= high, got {scale!r}"
            )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def resize_mask(mask: np.ndarray, size: int, resize: str = "square") -> np.ndarray:
    """(H,W) 0/255 mask -> (size, size) 0/255 uint8, as evaluation resizes it (padding 0)."""
    frame = InputFrame.for_image(mask.shape[0], mask.shape[1], size, resize)
    return np.where(mask_to_input(mask, frame) > 128, 255, 0).astype(np.uint8)


def input_content(
    image: np.ndarray, mask: np.ndarray, size: int, resize: str = "square"
) -> tuple[np.ndarray, np.ndarray]:
    """(H,W,3) uint8 image and (H,W) 0/255 mask -> the content of the model input as the
    harness prepares it: float32 pixels (h',w',3) in 0..255, not rounded, and the 0/255 uint8
    mask (h',w'); (h', w') is the frame's content size (S x S for ``square``)."""
    frame = InputFrame.for_image(image.shape[0], image.shape[1], size, resize)
    pixels = image_content(image, frame)[0].permute(1, 2, 0).numpy()
    content = (slice(0, frame.content_height), slice(0, frame.content_width))
    return np.ascontiguousarray(pixels), resize_mask(mask, size, resize)[content]


def pad_content(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Content (h',w',3) float pixels and (h',w') mask -> (size, size), bottom / right padding:
    SAM's pixel mean in the image (0 once normalised, as evaluation pads) and 0 in the mask."""
    out = np.empty((size, size, 3), np.float32)
    out[...] = np.asarray(SAM_PIXEL_MEAN, np.float32)
    out_mask = np.zeros((size, size), mask.dtype)
    height, width = mask.shape
    out[:height, :width], out_mask[:height, :width] = image, mask
    return out, out_mask


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise SuiteError(f"{path}: image not found; rerun `spt prepare`") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise SuiteError(f"{path}: unreadable image ({exc}); rerun `spt prepare`") from None
    return height, width


def check_same_size(row: pd.Series, image_hw: tuple[int, ...], mask_hw: tuple[int, ...]) -> None:
    """A SuiteError (as evaluation raises) when an image and its mask differ in size."""
    if tuple(image_hw[:2]) != tuple(mask_hw[:2]):
        raise SuiteError(
            f"{row['image_id']}: image {row['image_path']} is {image_hw[1]}x{image_hw[0]} but "
            f"its mask {row['mask_path']} is {mask_hw[1]}x{mask_hw[0]}; rerun `spt prepare`"
        )


def unusable_reason(mask: np.ndarray, size: int, resize: str = "square") -> str | None:
    """Why a training image admits no prompt at size x size (None: it does).

    An empty mask (a stale file) is named as such, not as a defect lost in the resize.
    """
    if not (mask > 128).any():
        return "mask is empty (no pixel above 128)"
    try:  # the harness's own check and wording (a box ignores the seed, id and low-res size)
        resized = resize_mask(mask, size, resize).astype(np.float32)
        build_prompt("box", resized, 0, "screen", size // 4)
    except PromptUnavailable as missing:
        return missing.reason
    return None


def normalise(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(S,S,3) uint8 or float pixels -> (1,3,S,S) float32 with SAM's pixel mean and std."""
    planes = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    return normalise_planes(planes)


class TrainingSet:
    """The training split as a function (index, epoch) -> :class:`TrainingSample`.

    ``rows``: manifest rows (image_id, image_path, mask_path), paths already resolved. Rows that
    admit no prompt are left out (``skipped``: (image id, reason) pairs); none left is a
    SuiteError. ``jitter_fallbacks``: the (image id, epoch) samples built in this process whose
    jitter lost the defect.
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        spec: BackboneSpec,
        options: SampleOptions,
        device: torch.device | str = "cpu",
    ) -> None:
        self.spec = spec
        self.options = options
        self.device = torch.device(device)
        rows = rows.reset_index(drop=True)
        self.skipped: list[tuple[str, str]] = []
        keep = []
        for index, row in rows.iterrows():
            mask = read_mask(Path(row["mask_path"]), row.get("prepared_mask_sha256") or None)
            check_same_size(row, image_size(Path(row["image_path"])), mask.shape)
            # once per run, not every epoch: the image must still be the one prepare hashed
            check_unchanged(Path(row["image_path"]), row.get("image_sha256") or None)
            reason = unusable_reason(mask, spec.image_size, options.resize)
            if reason is None:
                keep.append(index)
            else:
                self.skipped.append((str(row["image_id"]), reason))
        if not keep:
            first_id, first_reason = self.skipped[0]
            raise SuiteError(
                f"none of the {len(rows)} training images admits a prompt at "
                f"{spec.image_size}x{spec.image_size} (e.g. {first_id}: {first_reason}); rerun "
                "`spt prepare` if the masks are stale, else train on other datasets or on a "
                "backbone with a larger input (--backbone)"
            )
        self.rows = rows.iloc[keep].reset_index(drop=True)
        self.image_ids = list(self.rows["image_id"])
        self.jitter_fallbacks: set[tuple[str, int]] = set()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __call__(self, index: int, epoch: int) -> TrainingSample:
        row = self.rows.iloc[index]
        image_id = str(row["image_id"])
        opts = self.options
        rng = np.random.default_rng(sample_key(opts.seed, image_id, epoch, "augment"))
        image, mask = read_rgb(Path(row["image_path"])), read_mask(Path(row["mask_path"]))
        check_same_size(row, image.shape, mask.shape)
        size = self.spec.image_size
        content, content_mask = input_content(image, mask, size, opts.resize)
        content, content_mask, _ = random_hflip(content, content_mask, rng, p=opts.hflip)
        jittered = None
        if rng.random() < opts.lsj_prob:
            jittered = large_scale_jitter(
                content, content_mask, rng, output_size=size, scale_range=opts.lsj_scale
            )
            if not (jittered[1] > 128).any():  # deterministic: the same key always falls back
                self.jitter_fallbacks.add((image_id, epoch))
                jittered = None
        if jittered is None:
            image, mask = pad_content(content, content_mask, size)
        else:
            image, mask, _ = jittered
        mode = opts.prompt_modes[int(rng.integers(len(opts.prompt_modes)))]
        prompt_id = f"{image_id}#{epoch}"
        prompt = build_prompt_or_box(
            mode, mask.astype(np.float32), opts.seed, prompt_id, self.spec.low_res_size
        )
        target = torch.from_numpy((mask > 128).astype(np.float32))[None, None].to(self.device)
        return TrainingSample(
            image_id=image_id,
            image=normalise(image, self.device),
            image_uint8=to_uint8(image),
            target=target,
            prompt=prompt,
            key=torch_seed(opts.seed, image_id, epoch, "method"),
        )
