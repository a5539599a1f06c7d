"""The input protocol: original image/mask -> square model input, low-res logits -> original size.

Default (``square``) is the official SPT/HQ-SAM evaluation protocol: the image, as float 0..255,
is resized bilinearly (align_corners False, no antialiasing) to the S x S model input, ignoring
its aspect ratio, then normalised with SAM's pixel mean and std. The ground-truth mask is resized
the same way as float 0..255 (prompts are built from it, thresholded at > 128). The decoder's
L x L low-res logits are resized bilinearly straight to the original mask size.

``longest-side`` is SAM's own predictor geometry, offered as an option: the longer side is scaled
to S keeping the aspect ratio, the normalised image is zero-padded bottom/right to S x S, and
logits go L -> S, are cropped to the unpadded region, then resized to the original size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spt.errors import SuiteError
from spt.sam.backbones import SAM_PIXEL_MEAN, SAM_PIXEL_STD

RESIZE_MODES = ("square", "longest-side")


@dataclass(frozen=True)
class InputFrame:
    """Where one original image sits inside the S x S model input.

    ``content_height`` x ``content_width`` is the top-left region holding the resized image
    (S x S for ``square``); the rest is zero padding.
    """

    original_height: int
    original_width: int
    size: int
    content_height: int
    content_width: int

    @classmethod
    def for_image(cls, height: int, width: int, size: int, resize: str = "square") -> InputFrame:
        if resize == "square":
            return cls(height, width, size, size, size)
        if resize == "longest-side":
            scale = size / max(height, width)
            content_h = max(1, min(size, int(height * scale + 0.5)))
            content_w = max(1, min(size, int(width * scale + 0.5)))
            return cls(height, width, size, content_h, content_w)
        raise SuiteError(f"unknown resize mode {resize!r}: choose one of {', '.join(RESIZE_MODES)}")


def _resize_content(planes: torch.Tensor, frame: InputFrame) -> torch.Tensor:
    """(B,C,H,W) float -> (B,C,h',w'), bilinear to the frame's content size."""
    content = (frame.content_height, frame.content_width)
    return F.interpolate(planes, size=content, mode="bilinear", align_corners=False)


def _pad_to_input(planes: torch.Tensor, frame: InputFrame) -> torch.Tensor:
    """(B,C,h',w') -> (B,C,S,S) with zeros bottom/right (a no-op for ``square``)."""
    pad_bottom = frame.size - frame.content_height
    pad_right = frame.size - frame.content_width
    if pad_bottom or pad_right:
        planes = F.pad(planes, (0, pad_right, 0, pad_bottom))
    return planes


def normalise_planes(planes: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) float pixels in 0..255 -> normalised with SAM's pixel mean and std."""
    mean = torch.tensor(SAM_PIXEL_MEAN, device=planes.device).view(1, 3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD, device=planes.device).view(1, 3, 1, 1)
    return (planes - mean) / std


def image_content(
    image: np.ndarray, frame: InputFrame, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """RGB uint8 (H,W,3) -> float32 pixels (1,3,h',w') in 0..255, resized to the frame's
    content (bilinear, not rounded): the first step of :func:`image_to_input`, which training
    shares so that its augmentations start from the pixels evaluation feeds."""
    planes = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    return _resize_content(planes.permute(2, 0, 1)[None].float(), frame)


def content_to_input(content: torch.Tensor, frame: InputFrame) -> torch.Tensor:
    """Resized pixels (1,3,h',w') -> normalised float32 (1,3,S,S), padded with 0 after the
    normalisation (bottom / right), as SAM does."""
    return _pad_to_input(normalise_planes(content), frame)


def image_to_input(
    image: np.ndarray, frame: InputFrame, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """RGB uint8 (H,W,3) -> normalised float32 (1,3,S,S) on ``device``.

    Normalisation comes after the resize and before padding, as in SAM, so the padding is 0
    in the normalised space.
    """
    return content_to_input(image_content(image, frame, device), frame)


def mask_to_input(mask: np.ndarray, frame: InputFrame) -> np.ndarray:
    """uint8 0/255 mask (H,W) -> float32 (S,S) in 0..255, resized as the image is.

    Prompts are built from this map with the official foreground threshold (> 128).
    """
    planes = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    return _pad_to_input(_resize_content(planes, frame), frame)[0, 0].numpy()


def logits_to_original(low_res_logits: torch.Tensor, frame: InputFrame) -> torch.Tensor:
    """Low-res logits (N,1,L,L) -> logits (N,1,H,W) at the original mask size."""
    original = (frame.original_height, frame.original_width)
    logits = low_res_logits.float()
    if frame.content_height != frame.size or frame.content_width != frame.size:
        # SAM's predictor postprocessing: back to the input frame, drop the padding.
        logits = F.interpolate(
            logits, size=(frame.size, frame.size), mode="bilinear", align_corners=False
        )
        logits = logits[..., : frame.content_height, : frame.content_width]
    return F.interpolate(logits, size=original, mode="bilinear", align_corners=False)
