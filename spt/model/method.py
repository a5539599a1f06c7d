"""SPT behind the harness's Method interface: evaluation (draft and final) and training.

Params (``methods.spt`` in params.yaml; defaults are the official code's):

- ``lora_rank`` 8, ``lora_alpha`` 1, ``lora_dropout`` 0: LoRA on encoder q/v and decoder q/v.
- ``relation_threshold`` 0 (official ``vatt_alpha``), ``relation_blocks`` null = all two-way
  blocks (``vatt_pos`` -1), ``gamma_init`` 0, ``detach_draft`` true.
- ``official_checkpoint``: an official SAM-SPT checkpoint to evaluate (converted on load; the
  method's ``checkpoint`` argument is then the SAM checkpoint it was tuned from, if the file
  holds only the tuned tensors).
- ``init_seed`` 0: seeds the random weights of ``tiny``.
- Training: ``draft_loss_weight`` 1, ``final_loss_weight`` 1 (the paper does not state the
  weighting; 1:1 is the natural reading), ``loss_points`` 12544 (112 x 112; capped at one per low-res logit, so 1024 on tiny),
  ``loss_oversample`` 3, ``loss_importance`` 0.75 (HQ-SAM's point-sampled BCE + Dice).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spt.artifacts import assign_named_tensors
from spt.config.schema import MAX_SEED, build, setting
from spt.harness.method import MethodConfig, TrainableMethod, TrainingSample
from spt.harness.prompts import Prompt
from spt.model.convert import load_official_spt
from spt.model.spt_model import SPTConfig, SPTModel, build_spt
from spt.training.losses import default_loss_points, hq_sam_loss

WHERE = "methods.spt"
DECODER_BLOCKS = 2  # two-way transformer blocks in SAM's mask decoder, every backbone


@dataclass(frozen=True)
class SPTParams(MethodConfig):
    """``methods.spt``; the defaults are the official code's (its argument in brackets)."""

    lora_rank: int = setting(8, "LoRA rank on encoder and decoder q/v", minimum=1)
    lora_alpha: float = setting(
        1.0, "LoRA alpha; the update is scaled by alpha / rank", minimum=0, min_open=True
    )
    lora_dropout: float = setting(0.0, "LoRA dropout", minimum=0, maximum=1, max_open=True)
    relation_threshold: float = setting(
        0.0, "[vatt_alpha] keep relations S_ij > threshold / N; 0: off", minimum=0
    )
    relation_blocks: tuple[int, ...] | None = setting(
        None, "[vatt_pos] two-way blocks with VRA; null: every block",
        minimum=0, maximum=DECODER_BLOCKS - 1, nonempty=True,
    )  # fmt: skip
    gamma_init: float = setting(0.0, "[vatt_init] initial value of every gamma entry")
    detach_draft: bool = setting(True, "the draft feeds the final decoder without gradient")
    official_checkpoint: str | None = setting(
        None, "an official SAM-SPT checkpoint to evaluate (converted on load)"
    )
    init_seed: int = setting(
        0, "random weights of tiny and the new modules", minimum=0, maximum=MAX_SEED
    )
    draft_loss_weight: float = setting(1.0, "weight of the draft decoder's loss", minimum=0)
    final_loss_weight: float = setting(1.0, "weight of the final decoder's loss", minimum=0)
    loss_points: int | None = setting(
        None, "points of the point-sampled loss; null: 112 x 112, capped at one per low-res logit",
        minimum=1,
    )  # fmt: skip
    loss_oversample: float = setting(3.0, "candidate points drawn per loss point", minimum=1)
    loss_importance: float = setting(
        0.75, "share of loss points at the most uncertain logits", minimum=0, maximum=1
    )


def spt_config_from(params: SPTParams | Mapping[str, Any]) -> SPTConfig:
    """The model options of ``methods.spt`` (checked by the schema when given as a mapping)."""
    if not isinstance(params, SPTParams):
        params = build(SPTParams, dict(params), None, WHERE)
    return SPTConfig(
        lora_rank=params.lora_rank,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        relation_threshold=params.relation_threshold,
        relation_blocks=params.relation_blocks,
        gamma_init=params.gamma_init,
        detach_draft=params.detach_draft,
    )


class SPTMethod(TrainableMethod):
    """Self-Perception Tuning: LoRA-tuned SAM with a draft and a final decoder (VRA in both)."""

    name = "spt"
    stages = ("draft", "final")
    config_class = SPTParams

    def __init__(self, backbone, checkpoint=None, device="cpu", params=None) -> None:
        super().__init__(backbone, checkpoint, device, params)
        own = self.config
        config = spt_config_from(own)
        official, seed = own.official_checkpoint, own.init_seed
        self.loss_weights = (own.draft_loss_weight, own.final_loss_weight)
        self.loss_points = own.loss_points or default_loss_points(self.spec.low_res_size)
        self.loss_oversample = own.loss_oversample
        self.loss_importance = own.loss_importance
        if official:
            self.model: SPTModel = load_official_spt(
                official, backbone, self.checkpoint, config, self.device
            )
        else:
            ckpt = None if self.checkpoint is None else str(self.checkpoint)
            self.model = build_spt(backbone, config, ckpt, self.device, seed)
        self.model.eval()

    @property
    def network(self) -> nn.Module:
        return self.model

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1,3,S,S) prepared image -> (embedding (1,C,g,g), relation (1,g*g,g*g))."""
        return self.model.encode(image)

    def decode(self, state, prompt: Prompt) -> dict[str, torch.Tensor]:
        """-> {"draft": (N,1,L,L), "final": (N,1,L,L)} low-res logits."""
        embedding, relation = state
        inputs = prompt.as_tensors(self.device)
        out = self.model.decode(
            embedding, relation, inputs["points"], inputs["boxes"], inputs["masks"]
        )
        return {"draft": out.draft_logits, "final": out.final_logits}

    # ---- training -----------------------------------------------------------------------------

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for _, p in self.model.named_trainable_parameters())

    def training_losses(self, samples: Sequence[TrainingSample]) -> dict[str, torch.Tensor]:
        """HQ-SAM loss (point-sampled BCE + Dice) on the draft and on the final logits.

        The draft reaches the final decoder detached (official), so the final loss trains the
        final decoder and, through the shared embedding, the encoder LoRA; the draft loss trains
        the draft decoder and the encoder.
        """
        images = torch.cat([s.image for s in samples])
        embeddings, relations = self.model.encode(images)
        totals: dict[str, torch.Tensor] = {}
        for i, sample in enumerate(samples):
            out = self.decode((embeddings[i : i + 1], relations[i : i + 1]), sample.prompt)
            target = sample.target.expand(out["final"].shape[0], -1, -1, -1)
            generator = torch.Generator(device=target.device).manual_seed(sample.key)
            for stage, weight in zip(("draft", "final"), self.loss_weights, strict=True):
                bce, dice = hq_sam_loss(
                    out[stage], target, generator, self.loss_points, self.loss_oversample,
                    self.loss_importance,
                )  # fmt: skip
                for part, value in ((f"{stage}_bce", bce), (f"{stage}_dice", dice)):
                    totals[part] = totals.get(part, 0.0) + value / len(samples)
                totals["loss"] = totals.get("loss", 0.0) + weight * (bce + dice) / len(samples)
        return totals

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.model.named_trainable_parameters()}

    def load_trained_state(self, state: Mapping[str, torch.Tensor]) -> None:
        params = dict(self.model.named_trainable_parameters())
        assign_named_tensors(params, state, f"spt on {self.backbone} with these params")
