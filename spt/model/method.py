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
from typing import Any

import torch
from torch import nn

from spt.config.checks import read_bool, read_float, read_int
from spt.errors import SuiteError
from spt.harness.method import TrainableMethod, TrainingSample, assign_named_tensors
from spt.harness.prompts import Prompt
from spt.model.convert import load_official_spt
from spt.model.spt_model import SPTConfig, SPTModel, build_spt
from spt.training.losses import default_loss_points, hq_sam_loss

WHERE = "methods.spt"
DECODER_BLOCKS = 2  # two-way transformer blocks in SAM's mask decoder, every backbone
CONFIG_PARAMS = frozenset(
    {"lora_rank", "lora_alpha", "lora_dropout", "relation_threshold", "relation_blocks"}
    | {"gamma_init", "detach_draft"}
)


def spt_config_from(params: Mapping[str, Any]) -> SPTConfig:
    """The model options in ``params``; a wrong type or range is a SuiteError naming the key."""
    return SPTConfig(
        lora_rank=read_int(params, WHERE, "lora_rank", 8, minimum=1),
        lora_alpha=read_float(params, WHERE, "lora_alpha", 1.0, minimum=0, min_open=True),
        lora_dropout=read_float(
            params, WHERE, "lora_dropout", 0.0, minimum=0, maximum=1, max_open=True
        ),
        relation_threshold=read_float(params, WHERE, "relation_threshold", 0.0, minimum=0),
        relation_blocks=_relation_blocks(params.get("relation_blocks")),
        gamma_init=read_float(params, WHERE, "gamma_init", 0.0),
        detach_draft=read_bool(params, WHERE, "detach_draft", True),
    )


def _relation_blocks(value: Any) -> tuple[int, ...] | None:
    """null (every block) or a list of two-way block indices."""
    if value is None:
        return None
    valid = isinstance(value, list | tuple) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < DECODER_BLOCKS for b in value
    )
    if not valid or not value:
        raise SuiteError(
            f"{WHERE}.relation_blocks must be null (every block) or a non-empty list of block "
            f"indices in 0..{DECODER_BLOCKS - 1}, got {value!r}; fix it in the params file"
        )
    return tuple(value)


class SPTMethod(TrainableMethod):
    """Self-Perception Tuning: LoRA-tuned SAM with a draft and a final decoder (VRA in both)."""

    name = "spt"
    stages = ("draft", "final")
    known_params = CONFIG_PARAMS | {
        "official_checkpoint", "init_seed", "draft_loss_weight", "final_loss_weight",
        "loss_points", "loss_oversample", "loss_importance",
    }  # fmt: skip

    def __init__(self, backbone, checkpoint=None, device="cpu", params=None) -> None:
        super().__init__(backbone, checkpoint, device, params)
        config = spt_config_from(self.params)
        official = self.param_str("official_checkpoint")
        seed = self.param_int("init_seed", 0, minimum=0)
        self.loss_weights = (
            self.param_float("draft_loss_weight", 1.0, minimum=0),
            self.param_float("final_loss_weight", 1.0, minimum=0),
        )
        self.loss_points = self.param_int(
            "loss_points", default_loss_points(self.spec.low_res_size), minimum=1
        )
        self.loss_oversample = self.param_float("loss_oversample", 3.0, minimum=1)
        self.loss_importance = self.param_float("loss_importance", 0.75, minimum=0, maximum=1)
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
