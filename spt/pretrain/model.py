"""The whole tiny SAM as a trainable module for the shared engine: prompts in, losses out.

The engine calls ``model(batch)`` and optimises ``["loss"]``. :class:`PromptedSam` runs
segment_anything's own modules: ``image_encoder`` once over the batch, ``prompt_encoder`` per
sample, and ``mask_decoder`` (``multimask_output=False``, mask token 0, as the SPT evaluation)
vmapped over the samples whose prompts have the same number of sparse tokens (a box, K points,
or a mask prompt), since tokens of unequal length do not stack.

Loss, averaged over the batch:

- HQ-SAM's point-sampled BCE + Dice (:mod:`spt.training.losses`) between the low-res logits
  (L x L) and the object mask in the input frame (S x S), each sample's points drawn from a
  generator seeded by that sample's key (so a sample's loss does not depend on its batch);
- plus ``iou_loss_weight`` x MSE between the IoU head's score and the IoU the mask reaches
  (:func:`spt.training.losses.iou_head_loss`), as SAM trains its IoU head, so the pretrained
  model's confidence is meaningful to methods that read it (multimask selection, WeSAM).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from spt.harness.prompts import Prompt
from spt.training.losses import iou_head_loss, point_sampled_bce_dice, select_uncertain_points


def decode(sam: Sam, embedding: torch.Tensor, prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
    """Image embedding (1,C,g,g) + N prompt rows -> low-res logits (N,1,L,L), IoU scores (N,1)."""
    sparse, dense = sam.prompt_encoder(**prompt.as_tensors(embedding.device))
    return sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )


def decode_batch(
    sam: Sam, embeddings: torch.Tensor, prompts: list[Prompt]
) -> tuple[torch.Tensor, torch.Tensor]:
    """B image embeddings (B,C,g,g) + B one-row prompts -> logits (B,1,L,L), IoU scores (B,1).

    Row i of the outputs belongs to embedding i and prompt i. SAM's decoder pairs one image
    with N prompts; ``torch.func.vmap`` maps it over (image, prompt) pairs instead, one call
    per group of prompts with equal token counts (same numbers as a loop, several times faster).
    """
    encoded = [sam.prompt_encoder(**p.as_tensors(embeddings.device)) for p in prompts]
    groups: dict[int, list[int]] = {}
    for index, (sparse, _) in enumerate(encoded):
        if sparse.shape[0] != 1:
            raise ValueError(f"prompt {index} has {sparse.shape[0]} rows; expected one per image")
        groups.setdefault(sparse.shape[1], []).append(index)
    image_pe = sam.prompt_encoder.get_dense_pe()

    def decode_pair(embedding, sparse, dense):
        logits, scores = sam.mask_decoder(
            image_embeddings=embedding[None],
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse[None],
            dense_prompt_embeddings=dense[None],
            multimask_output=False,
        )
        return logits[0], scores[0]

    logits: list[torch.Tensor] = [embeddings.new_empty(0)] * len(prompts)
    scores: list[torch.Tensor] = [embeddings.new_empty(0)] * len(prompts)
    for members in groups.values():
        group_logits, group_scores = torch.func.vmap(decode_pair)(
            embeddings[members],
            torch.cat([encoded[i][0] for i in members]),
            torch.cat([encoded[i][1] for i in members]),
        )
        for row, index in enumerate(members):
            logits[index], scores[index] = group_logits[row], group_scores[row]
    return torch.stack(logits), torch.stack(scores)


class PromptedSam(nn.Module):
    """Trains every parameter of ``sam`` (image encoder, prompt encoder, mask decoder).

    batch: ``images`` (B,3,S,S) normalised, ``targets`` (B,1,S,S) float {0,1}, ``prompts`` B
    one-row :class:`Prompt`, ``keys`` B ints seeding each sample's loss point sampling.
    forward returns scalars ``loss`` (optimised), ``bce``, ``dice``, ``iou_mse`` (logged).
    """

    def __init__(self, sam: Sam, loss_points: int, iou_loss_weight: float) -> None:
        super().__init__()
        self.sam = sam
        self.loss_points = loss_points
        self.iou_loss_weight = iou_loss_weight

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        device = self.sam.device
        targets = batch["targets"].to(device)
        embeddings = self.sam.image_encoder(batch["images"].to(device))
        logits, predicted_iou = decode_batch(self.sam, embeddings, batch["prompts"])
        coords = torch.cat(
            [
                select_uncertain_points(
                    logits[i : i + 1].detach(),
                    torch.Generator(device=device).manual_seed(key),
                    self.loss_points,
                )
                for i, key in enumerate(batch["keys"])
            ]
        )
        bce, dice = point_sampled_bce_dice(logits, targets, coords)
        # The reached IoU is measured in the input frame, where the target lives.
        upsampled = F.interpolate(
            logits.detach(), size=targets.shape[-2:], mode="bilinear", align_corners=False
        )
        iou_mse = iou_head_loss(predicted_iou, upsampled, targets)
        loss = bce + dice + self.iou_loss_weight * iou_mse
        return {
            "loss": loss,
            "bce": bce.detach(),
            "dice": dice.detach(),
            "iou_mse": iou_mse.detach(),
        }
