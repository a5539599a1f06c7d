"""Zero-shot SAM: the pretrained model, prompted, nothing trained.

Runs segment_anything's own modules: ``image_encoder`` once per image, then ``prompt_encoder``
and ``mask_decoder`` per prompt. ``multimask_output`` is False by default, as in the official SPT
evaluation (mask token 0 only); with ``multimask_output: true`` in the params SAM predicts three
masks per prompt and the one with the highest predicted IoU is kept, as SAM's predictor does.

Params: ``multimask_output`` (bool, False), ``init_seed`` (int, 0; seeds the random weights of a
backbone loaded without a checkpoint, i.e. ``tiny``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spt.config.schema import MAX_SEED, setting
from spt.harness.method import Method, MethodConfig
from spt.harness.prompts import Prompt
from spt.sam import load_sam


@dataclass(frozen=True)
class ZeroShotConfig(MethodConfig):
    """``methods.zero_shot``."""

    multimask_output: bool = setting(
        False, "decode SAM's three masks per prompt and keep the highest predicted IoU"
    )
    init_seed: int = setting(
        0, "random weights of a backbone without a checkpoint (tiny)", minimum=0, maximum=MAX_SEED
    )


class ZeroShotSAM(Method):
    """Frozen SAM; one output stage, ``final``."""

    name = "zero_shot"
    stages = ("final",)
    config_class = ZeroShotConfig

    def __init__(self, backbone, checkpoint=None, device="cpu", params=None) -> None:
        super().__init__(backbone, checkpoint, device, params)
        self.multimask_output = self.config.multimask_output
        self.sam = load_sam(backbone, self.checkpoint, self.device, seed=self.config.init_seed)
        self.sam.requires_grad_(False)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(1,3,S,S) prepared image -> image embedding (1,C,g,g)."""
        return self.sam.image_encoder(image)

    def decode(self, state: torch.Tensor, prompt: Prompt) -> dict[str, torch.Tensor]:
        """Embedding + prompt -> {"final": low-res logits (N,1,L,L)}."""
        sparse, dense = self.sam.prompt_encoder(**prompt.as_tensors(self.device))
        logits, predicted_iou = self.sam.mask_decoder(
            image_embeddings=state,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.multimask_output,
        )
        if self.multimask_output:
            best = predicted_iou.argmax(dim=1)
            logits = logits[torch.arange(logits.shape[0], device=logits.device), best][:, None]
        return {"final": logits}
