"""Low-rank adaptation (LoRA) of frozen linear layers, and where SPT puts it in SAM.

A LoRA layer keeps the pretrained ``nn.Linear`` frozen and adds a trainable low-rank update:

    y = base(x) + scale * (dropout(x) @ A.T) @ B.T,    A: (r, in), B: (out, r), scale = alpha / r

A starts kaiming-uniform (the default init of ``nn.Linear``) and B starts at zero, so a fresh LoRA
layer computes exactly what its base layer computes. The forward is always unmerged: the base
weight is never modified in place, because merging and unmerging in float32 drifts the base weight
(by ~1.5e-8 in the official code); :meth:`LoRALinear.merged_weight` gives the merged matrix when a
plain layer is wanted.

SAM's image encoder computes q, k and v with one fused ``qkv`` Linear (out = 3 * dim, rows ordered
q, k, v). SPT adapts only the q and v row blocks; :class:`LoRAFusedQKV` holds one (A, B) pair for
each and leaves the k rows untouched.
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder
from torch import Tensor, nn
from torch.nn import functional as F


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``r`` update (``lora_A``, ``lora_B``).

    Input (..., in_features) -> output (..., out_features), like the wrapped layer.
    """

    def __init__(self, base: nn.Linear, r: int, lora_alpha: float = 1.0, dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        self.base = base
        self.base.requires_grad_(False)
        self.r = r
        self.scale = lora_alpha / r
        self.lora_A = nn.Parameter(base.weight.new_empty(r, base.in_features))
        self.lora_B = nn.Parameter(base.weight.new_empty(base.out_features, r))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def reset_lora(self) -> None:
        """A kaiming-uniform as ``nn.Linear`` does, B zero: the update starts at exactly 0."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> Tensor:
        """``scale * B @ A``, (out, in): what merging would add to the base weight."""
        return (self.lora_B @ self.lora_A) * self.scale

    def merged_weight(self) -> Tensor:
        """The base weight with the update merged in, (out, in); nothing is modified."""
        return self.base.weight + self.delta_weight()

    def forward(self, x: Tensor) -> Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return self.base(x) + update * self.scale


class LoRAFusedQKV(nn.Module):
    """A frozen fused qkv ``nn.Linear`` (out = 3 * dim) with LoRA on the q and v rows only.

    Parameters ``lora_A_q`` / ``lora_A_v`` are (r, in), ``lora_B_q`` / ``lora_B_v`` are (dim, r).
    Input (..., in) -> output (..., 3 * dim), rows ordered q, k, v as in SAM's encoder attention.
    """

    def __init__(self, base: nn.Linear, r: int, lora_alpha: float = 1.0, dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        if base.out_features % 3:
            raise ValueError(f"a fused qkv layer has 3 * dim outputs, got {base.out_features}")
        self.base = base
        self.base.requires_grad_(False)
        self.r = r
        self.scale = lora_alpha / r
        self.dim = base.out_features // 3
        new = base.weight.new_empty
        self.lora_A_q = nn.Parameter(new(r, base.in_features))
        self.lora_B_q = nn.Parameter(new(self.dim, r))
        self.lora_A_v = nn.Parameter(new(r, base.in_features))
        self.lora_B_v = nn.Parameter(new(self.dim, r))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora()

    def reset_lora(self) -> None:
        for a, b in ((self.lora_A_q, self.lora_B_q), (self.lora_A_v, self.lora_B_v)):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.zeros_(b)

    def delta_weight(self) -> Tensor:
        """``scale * [B_q A_q; 0; B_v A_v]``, (3 * dim, in)."""
        q = self.lora_B_q @ self.lora_A_q
        v = self.lora_B_v @ self.lora_A_v
        return torch.cat([q, torch.zeros_like(q), v], dim=0) * self.scale

    def merged_weight(self) -> Tensor:
        return self.base.weight + self.delta_weight()

    def forward(self, x: Tensor) -> Tensor:
        dropped = self.dropout(x)
        q = F.linear(F.linear(dropped, self.lora_A_q), self.lora_B_q)
        v = F.linear(F.linear(dropped, self.lora_A_v), self.lora_B_v)
        update = torch.cat([q, torch.zeros_like(q), v], dim=-1)
        return self.base(x) + update * self.scale


def add_encoder_lora(
    encoder: ImageEncoderViT, r: int, lora_alpha: float = 1.0, dropout: float = 0.0
) -> list[LoRAFusedQKV]:
    """Replace every encoder block's ``attn.qkv`` with :class:`LoRAFusedQKV` (in place).

    The neck, patch embedding, MLPs and output projections stay plain.
    """
    added = []
    for block in encoder.blocks:
        if not isinstance(block.attn.qkv, nn.Linear):
            raise ValueError("the image encoder already carries LoRA")
        block.attn.qkv = LoRAFusedQKV(block.attn.qkv, r, lora_alpha, dropout)
        added.append(block.attn.qkv)
    return added


def add_decoder_lora(
    decoder: MaskDecoder, r: int, lora_alpha: float = 1.0, dropout: float = 0.0
) -> list[LoRALinear]:
    """Wrap ``q_proj`` and ``v_proj`` of every attention of the two-way transformer (in place).

    That is self-attention and both cross-attentions of each block, and the final token-to-image
    attention; ``k_proj`` and ``out_proj`` stay plain.
    """
    transformer = decoder.transformer
    attentions = [
        attn
        for block in transformer.layers
        for attn in (
            block.self_attn,
            block.cross_attn_token_to_image,
            block.cross_attn_image_to_token,
        )
    ]
    attentions.append(transformer.final_attn_token_to_image)
    added = []
    for attn in attentions:
        for name in ("q_proj", "v_proj"):
            linear = getattr(attn, name)
            if not isinstance(linear, nn.Linear):
                raise ValueError("the mask decoder already carries LoRA")
            wrapped = LoRALinear(linear, r, lora_alpha, dropout)
            setattr(attn, name, wrapped)
            added.append(wrapped)
    return added
