"""An optional fused attention path for SAM's ViT image encoder (``torch`` SDPA).

segment_anything's encoder ``Attention`` materialises the (B*heads, HW, HW) score matrix, adds
the decomposed relative-position bias to it and runs a separate softmax and matmul.
:class:`FastAttention` computes the same function through
``torch.nn.functional.scaled_dot_product_attention`` with the relative-position bias passed as a
float ``attn_mask``, so torch can pick a fused kernel. The bias is built from segment_anything's
own ``get_rel_pos`` (SAM's code is not copied); ``self.qkv`` and ``self.proj`` are called as
modules, so LoRA-wrapped qkv layers (``spt.model.lora``, peft) and adapter wrappers around the
attention (``baselines.adapter``) keep working.

:func:`use_fast_attention` / :func:`use_sam_attention` switch a built model in place (the class
swap of :mod:`spt.sam.portable`): parameters, hooks and state-dict keys stay, and switching back
gives SAM's exact output again. SAM's path stays the default; the fused one is opt-in.

It is not bitwise equal to SAM's path (the softmax and the sums run in another order). Measured
on CPU (torch 2.14, one thread, ``SPT_NUMERICS=portable``) on image-encoder embeddings with
random non-zero rel_pos, as max abs difference / max abs difference relative to the largest
|value| of SAM's output (element-wise relative differences are meaningless at values near zero):

- float32, ``tiny`` (128 px): 1.4e-6 / 4.1e-7; gradients of every parameter 1.4e-6 (relative);
- float32, vit_b-shaped encoder (dim 768, 12 heads, window 14 with padding, one global block,
  256 px): 6.7e-6 / 1.4e-6 (3.8e-6 / 9.1e-7 without rel_pos); gradients 1.7e-6 (relative);
- float32, full vit_b at 1024 px (benchmarks/bench_attention.py, two threads): 6.2e-6 / 1.7e-6;
- ``torch.autocast("cpu", dtype=torch.bfloat16)`` against float32: 0.035 / 0.010 on ``tiny``,
  0.061 / 0.013 on the vit_b shape; SAM's own path under autocast differs from float32 as much
  (0.036 / 0.010 and 0.072 / 0.015): bfloat16 rounding, not this path.

Speed: on a loaded two-core CPU in the portable mode (ATen's plain kernels) the two paths took
about the same time (vit_b encoder, SDPA / SAM 0.54 and 1.09 in two runs; tiny about 1.0), so
no CPU speed-up is claimed; devices with fused SDPA kernels are where it may pay (not measured
here). The float mask is still (B, heads, HW, HW), as large as SAM's score matrix.

Tolerances, relative to the largest |value| (about 15x and 3x the measured figures):
:data:`FP32_TOLERANCE` for float32, :data:`BF16_TOLERANCE` for bfloat16 autocast.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn
from torch.nn import functional as F

from spt.errors import SuiteError

ATTENTION_KINDS = ("sam", "sdpa")

# max |fast - sam| / max |sam| allowed (the module docstring has the measured figures).
FP32_TOLERANCE = 2e-5
BF16_TOLERANCE = 5e-2


class FastAttention(Attention):
    """segment_anything's encoder ``Attention`` computed with fused scaled-dot-product attention.

    (B, H, W, dim) -> (B, H, W, dim). SDPA's default scale, ``head_dim ** -0.5``, is exactly
    SAM's ``self.scale``, so no scale is passed.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        heads = self.num_heads
        # (B, HW, 3, heads, head_dim) -> three (B, heads, HW, head_dim)
        q, k, v = (
            self.qkv(x)
            .reshape(batch, height * width, 3, heads, -1)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        bias = self._rel_pos_bias(q, height, width) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        # (B, heads, HW, head_dim) -> (B, H, W, heads * head_dim)
        out = out.transpose(1, 2).reshape(batch, height, width, -1)
        return self.proj(out)

    def _rel_pos_bias(self, q: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """SAM's decomposed relative-position term as an additive (B, heads, HW, HW) mask.

        SAM adds ``q . R`` with the *unscaled* query (the scale applies to ``q . k`` only).
        """
        rel_h = get_rel_pos(height, height, self.rel_pos_h)  # (H, H_k, head_dim)
        rel_w = get_rel_pos(width, width, self.rel_pos_w)  # (W, W_k, head_dim)
        grid_q = q.reshape(*q.shape[:2], height, width, q.shape[-1])
        # Casts: under autocast q is bf16/fp16 while rel_pos stays fp32; SDPA wants one dtype.
        term_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, rel_h.to(q.dtype))
        term_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, rel_w.to(q.dtype))
        bias = term_h[..., :, None] + term_w[..., None, :]  # (B, heads, H, W, H_k, W_k)
        return bias.reshape(*q.shape[:2], height * width, height * width).to(q.dtype)


def use_fast_attention(model: nn.Module) -> nn.Module:
    """Switch every segment_anything encoder ``Attention`` in ``model`` to :class:`FastAttention`
    (in place; parameters, hooks and state-dict keys stay); returns ``model``."""
    for module in model.modules():
        if type(module) is Attention:
            module.__class__ = FastAttention
    return model


def use_sam_attention(model: nn.Module) -> nn.Module:
    """Undo :func:`use_fast_attention`: every :class:`FastAttention` back to SAM's ``Attention``."""
    for module in model.modules():
        if type(module) is FastAttention:
            module.__class__ = Attention
    return model


def set_attention(model: nn.Module, kind: str) -> nn.Module:
    """Put ``model``'s encoder attention on path ``kind`` (one of :data:`ATTENTION_KINDS`)."""
    if kind == "sam":
        return use_sam_attention(model)
    if kind == "sdpa":
        return use_fast_attention(model)
    raise SuiteError(f"unknown attention kind {kind!r}: use one of {', '.join(ATTENTION_KINDS)}")
