"""WeSAM (CVPR 2024): weakly supervised self-training of SAM, as a baseline for defect masks.

One SAM, three roles:

- **anchor**: the original SAM. It is the same module run with the LoRA layers bypassed
  (:func:`lora_bypassed`), so no second copy of the encoder is held (vit_h: 2.5 GB saved) at
  the cost of a third encoder pass per step, which the official code pays as well.
- **teacher** and **student**: SAM with rank-4 LoRA on q and v of every image-encoder block
  (scale 1, i.e. ``lora_alpha = rank``), the same LoRA tensors for both (no EMA). Prompt
  encoder, mask decoder and all base weights stay frozen.

Per training image (key = ``sample.key``): a weak view (random flips) goes to teacher and anchor,
a strong view (the same flips plus photometric ops) to the student; both views share the flipped
mask, which is split into connected components, one prompt per component. With
``PL = teacher logits > 0`` (:func:`spt.training.losses.pseudo_labels`, no gradient):

    loss = 20 * focal(student, PL) + dice(student, PL) + mse(student IoU head, IoU(student, PL))
           + 0.5 * dice(student, anchor > 0) + 0.5 * dice(teacher, anchor > 0)
           + contrastive(teacher vs anchor instance features, tau 0.3)

Gradients: the student pass and the teacher pass both carry gradient (into the shared LoRA
tensors), as in the official code; only the pseudo-label is cut from the graph. A no-grad teacher
would silence the teacher half of the anchor term and the whole contrastive term. The anchor
pass runs without gradient. docs/baselines.md (section WeSAM) lists every deviation from the
official code.

Params (``methods.wesam``): ``lora_rank`` 4, ``lora_alpha`` (default = rank: scale 1),
``multimask_output`` False (evaluation, as zero-shot), ``init_seed`` 0, ``focal_weight`` 20,
``dice_weight`` 1, ``iou_weight`` 1, ``anchor_weight`` 1, ``contrastive_weight`` 1,
``temperature`` 0.3, ``contrastive_form`` "infonce" (or "wesam"), ``focal_alpha`` 0.25,
``focal_gamma`` 2, ``max_instances`` 40 (the largest components are kept).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, Sam
from torch import nn

from baselines.wesam_losses import (
    WESAM_TEMPERATURE,
    anchor_loss,
    instance_contrastive_loss,
    instances_from_mask,
    pseudo_labels,
)
from baselines.wesam_views import WeSAMViews, weak_and_strong_views
from spt.artifacts import assign_named_tensors
from spt.config.schema import MAX_SEED, setting
from spt.errors import SuiteError
from spt.harness.method import MethodConfig, TrainableMethod, TrainingSample
from spt.harness.prompts import Prompt, build_prompt_or_box
from spt.model.lora import LoRAFusedQKV, add_encoder_lora
from spt.sam import load_sam
from spt.training.losses import dice_loss, iou_head_loss, sigmoid_focal_loss
from spt.training.samples import normalise

LOSS_TERMS = ("focal", "dice", "iou", "anchor", "contrastive")


@contextmanager
def lora_bypassed(encoder: ImageEncoderViT) -> Iterator[None]:
    """Run ``encoder`` as the original SAM: every LoRA qkv is swapped for its frozen base layer.

    Inside the block the encoder computes exactly what it computed before LoRA was added (the
    same ``nn.Linear`` objects run); the LoRA modules are put back on exit, even on error.
    """
    wrapped = [block.attn for block in encoder.blocks if isinstance(block.attn.qkv, LoRAFusedQKV)]
    originals = [attn.qkv for attn in wrapped]
    try:
        for attn, lora in zip(wrapped, originals, strict=True):
            attn.qkv = lora.base
        yield
    finally:
        for attn, lora in zip(wrapped, originals, strict=True):
            attn.qkv = lora


def instance_prompts(
    mask: np.ndarray, mode: str, key: int, image_id: str, low_res: int, max_instances: int
) -> list[Prompt]:
    """One single-row prompt of ``mode`` per 8-connected component of ``mask``.

    mask: (S,S) bool, the (flipped) training target. Component k's prompt is drawn from
    ``prompt_rng(key, f"{image_id}#instance{k}", mode)``, so components get independent points.
    A component too small for the mode (e.g. 3 pixels for points-5) gets a box instead. At most
    ``max_instances`` components, the largest (ties: raster order), as WeSAM caps instances.
    """
    regions = instances_from_mask(mask)
    if not regions:
        raise SuiteError(f"training sample {image_id}: the target has no foreground to prompt")
    by_area = sorted(range(len(regions)), key=lambda k: -int(regions[k].sum()))
    kept = sorted(by_area[:max_instances])
    prompts = []
    for k in kept:
        resized = regions[k].astype(np.float32) * 255.0  # build_prompt's 0..255 mask convention
        instance_id = f"{image_id}#instance{k}"
        prompts.append(build_prompt_or_box(mode, resized, key, instance_id, low_res))
    return prompts


def stack_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    """Group single-row prompts by mode into multi-row prompts (one decoder call per group).

    Rows keep their relative order within a group; groups follow the first appearance of their
    mode. Callers must use the grouped order for every role (teacher, anchor, student).
    """
    by_mode: dict[str, list[Prompt]] = {}
    for prompt in prompts:
        by_mode.setdefault(prompt.mode, []).append(prompt)

    def stacked(group: list[Prompt], field: str) -> np.ndarray | None:
        parts = [getattr(p, field) for p in group]
        return None if parts[0] is None else np.concatenate(parts)

    return [
        Prompt(
            mode,
            boxes=stacked(group, "boxes"),
            point_coords=stacked(group, "point_coords"),
            point_labels=stacked(group, "point_labels"),
            mask_input=stacked(group, "mask_input"),
        )
        for mode, group in by_mode.items()
    ]


@dataclass
class RoleOutputs:
    """One role's decoder outputs for one image's instances (rows in grouped prompt order).

    logits:        (N,1,L,L) low-res mask logits
    predicted_iou: (N,1) the IoU head's score
    """

    logits: torch.Tensor
    predicted_iou: torch.Tensor


@dataclass(frozen=True)
class WeSAMConfig(MethodConfig):
    """``methods.wesam`` (defaults: the official code's; deviations in docs/baselines.md)."""

    lora_rank: int = setting(4, "rank of the encoder q/v LoRA", minimum=1)
    lora_alpha: float | None = setting(
        None, "LoRA alpha; null: the rank (WeSAM adds B A x unscaled)", minimum=0, min_open=True
    )
    multimask_output: bool = setting(
        False, "decode three masks per prompt and keep the highest predicted IoU"
    )
    focal_weight: float = setting(20.0, "weight of the focal loss", minimum=0)
    dice_weight: float = setting(1.0, "weight of the Dice loss", minimum=0)
    iou_weight: float = setting(1.0, "weight of the IoU-head loss", minimum=0)
    anchor_weight: float = setting(1.0, "weight of the anchor loss", minimum=0)
    contrastive_weight: float = setting(1.0, "weight of the contrastive loss", minimum=0)
    temperature: float = setting(
        WESAM_TEMPERATURE, "temperature of the contrastive loss", minimum=0, min_open=True
    )
    contrastive_form: Literal["infonce", "wesam"] = setting(
        "infonce", "infonce: the paper's loss; wesam: the official code's form"
    )
    focal_alpha: float = setting(0.25, "focal alpha; < 0: unweighted", maximum=1)
    focal_gamma: float = setting(2.0, "focal gamma", minimum=0)
    max_instances: int = setting(40, "instances per image used in training", minimum=1)
    init_seed: int = setting(
        0, "random weights (tiny without a checkpoint) and LoRA's A", minimum=0, maximum=MAX_SEED
    )


class WeSAM(TrainableMethod):
    """WeSAM's self-training of SAM (anchor / teacher / student) with encoder q/v LoRA."""

    name = "wesam"
    stages = ("final",)
    config_class = WeSAMConfig

    def __init__(self, backbone, checkpoint=None, device="cpu", params=None) -> None:
        super().__init__(backbone, checkpoint, device, params)
        own = self.config
        rank = own.lora_rank
        alpha = float(rank) if own.lora_alpha is None else own.lora_alpha
        self.multimask_output = own.multimask_output
        self.loss_weights = {t: getattr(own, f"{t}_weight") for t in LOSS_TERMS}
        self.temperature = own.temperature
        self.contrastive_form = own.contrastive_form
        self.focal_alpha, self.focal_gamma = own.focal_alpha, own.focal_gamma
        self.max_instances = own.max_instances
        seed = own.init_seed
        # Built on CPU: LoRA's A is drawn from the (forked, seeded) CPU RNG, so the method is a
        # function of its params on any device.
        self.sam: Sam = load_sam(backbone, self.checkpoint, "cpu", seed=seed)
        self.sam.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            add_encoder_lora(self.sam.image_encoder, rank, alpha)
        self.sam.to(self.device).eval()

    # ---- evaluation ------------------------------------------------------------------------------

    @property
    def network(self) -> nn.Module:
        return self.sam

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) prepared image -> student (LoRA) embedding (B,C,g,g)."""
        return self.sam.image_encoder(image)

    def encode_anchor(self, image: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) -> the original SAM's embedding (B,C,g,g), without gradient."""
        with torch.no_grad(), lora_bypassed(self.sam.image_encoder):
            return self.sam.image_encoder(image)

    def decode(self, state: torch.Tensor, prompt: Prompt) -> dict[str, torch.Tensor]:
        """(1,C,g,g) embedding + prompt -> {"final": (N,1,L,L) low-res logits}.

        Mask token 0 (``multimask_output`` False) unless the params ask for SAM's three masks,
        then the one with the highest predicted IoU, as zero-shot SAM does.
        """
        logits, predicted_iou = self._run_decoder(state, prompt, self.multimask_output)
        if self.multimask_output:
            best = predicted_iou.argmax(dim=1)
            logits = logits[torch.arange(logits.shape[0], device=logits.device), best][:, None]
        return {"final": logits}

    def _run_decoder(
        self, embedding: torch.Tensor, prompt: Prompt, multimask: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1,C,g,g) + N-row prompt -> logits (N,M,L,L), predicted IoU (N,M); M = 3 or 1."""
        sparse, dense = self.sam.prompt_encoder(**prompt.as_tensors(self.device))
        return self.sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    def _decode_groups(self, embedding: torch.Tensor, groups: Sequence[Prompt]) -> RoleOutputs:
        """One role on one image: every prompt group decoded, rows concatenated in group order."""
        outputs = [self._run_decoder(embedding, group) for group in groups]
        return RoleOutputs(
            logits=torch.cat([logits for logits, _ in outputs]),
            predicted_iou=torch.cat([iou for _, iou in outputs]),
        )

    # ---- training --------------------------------------------------------------------------------

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for _, p in self._lora_parameters())

    def _lora_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.sam.named_parameters() if ".lora_" in n)

    def views(self, sample: TrainingSample) -> WeSAMViews:
        """The weak and strong views of one sample, drawn from ``default_rng(sample.key)``."""
        if sample.image_uint8.shape[:2] != sample.target.shape[-2:]:
            raise SuiteError(
                f"training sample {sample.image_id}: image {sample.image_uint8.shape[:2]} and "
                f"target {tuple(sample.target.shape[-2:])} differ in size"
            )
        mask = sample.target[0, 0].detach().cpu().numpy() > 0.5
        return weak_and_strong_views(sample.image_uint8, mask, np.random.default_rng(sample.key))

    def training_losses(self, samples: Sequence[TrainingSample]) -> dict[str, torch.Tensor]:
        """WeSAM's loss for a batch: each term is a mean over an image's instances, then over
        images; ``"loss"`` is the weighted total, the terms are returned for logging."""
        if not samples:
            raise SuiteError("wesam: training_losses needs at least one sample")
        views = [self.views(s) for s in samples]
        weak = torch.cat([normalise(v.weak_image, self.device) for v in views])
        strong = torch.cat([normalise(v.strong_image, self.device) for v in views])
        # Teacher (weak) and student (strong) share the LoRA weights: one batched pass, both
        # halves keep their gradient.
        teacher_embeddings, student_embeddings = self.encode(torch.cat([weak, strong])).chunk(2)
        anchor_embeddings = self.encode_anchor(weak)

        totals = {term: torch.zeros((), device=self.device) for term in (*LOSS_TERMS, "loss")}
        for index, (sample, view) in enumerate(zip(samples, views, strict=True)):
            groups = stack_prompts(
                instance_prompts(
                    view.mask, sample.prompt.mode, sample.key, sample.image_id,
                    self.spec.low_res_size, self.max_instances,
                )
            )  # fmt: skip
            embeddings = (
                teacher_embeddings[index : index + 1],
                anchor_embeddings[index : index + 1],
                student_embeddings[index : index + 1],
            )
            terms = self._image_terms(*embeddings, groups)
            for term, value in terms.items():
                totals[term] = totals[term] + value / len(samples)
                totals["loss"] = totals["loss"] + self.loss_weights[term] * value / len(samples)
        return totals

    def _image_terms(
        self,
        teacher_embedding: torch.Tensor,
        anchor_embedding: torch.Tensor,
        student_embedding: torch.Tensor,
        groups: Sequence[Prompt],
    ) -> dict[str, torch.Tensor]:
        """The five WeSAM terms for one image; embeddings (1,C,g,g), N instance rows in groups."""
        teacher = self._decode_groups(teacher_embedding, groups)
        student = self._decode_groups(student_embedding, groups)
        with torch.no_grad():
            anchor = self._decode_groups(anchor_embedding, groups)

        # The official losses compare masks at the input resolution (S x S), not at L x L.
        size = (self.spec.image_size, self.spec.image_size)
        teacher_full, student_full, anchor_full = (
            F.interpolate(role.logits, size=size, mode="bilinear", align_corners=False)
            for role in (teacher, student, anchor)
        )
        labels = pseudo_labels(teacher_full)
        return {
            "focal": sigmoid_focal_loss(student_full, labels, self.focal_alpha, self.focal_gamma),
            "dice": dice_loss(student_full, labels),
            "iou": iou_head_loss(student.predicted_iou, student_full, labels),
            "anchor": anchor_loss(student_full, teacher_full, anchor_full),
            "contrastive": instance_contrastive_loss(
                teacher_embedding[0],
                anchor_embedding[0],
                (teacher.logits[:, 0] > 0).float(),
                (anchor.logits[:, 0] > 0).float(),
                self.temperature,
                self.contrastive_form,
            ),
        }

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self._lora_parameters()}

    def load_trained_state(self, state: Mapping[str, torch.Tensor]) -> None:
        assign_named_tensors(dict(self._lora_parameters()), state, f"wesam on {self.backbone}")
