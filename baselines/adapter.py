"""Adapter baseline: bottleneck adapters in every SAM encoder block (Medical SAM Adapter style).

A bottleneck adapter maps (..., dim) -> (..., dim) as ``up(GELU(down(x)))`` with ``down``:
dim -> width, ``up``: width -> dim, width = int(dim * ``ratio``) (ratio 0.25: 192 for ViT-B, 16
for tiny). ``up`` starts at zero (weight and bias), so a fresh adapter outputs exactly 0 and the
model at step 0 computes exactly what SAM computes.

Where they sit in each of segment_anything's encoder ``Block``\\ s, whose forward is
``x = x + attn(norm1(x))`` (windowed or global) then ``x = x + mlp(norm2(x))``; the Block code is
untouched, its ``attn`` and ``mlp`` children are wrapped:

- ``"attn"``: after the attention, with its own skip: ``attn(h)`` becomes ``a + adapter(a)``
  with ``a = attn(h)``, before the block's residual add (MSA's ``Space_Adapter``).
- ``"mlp"``: in parallel to the MLP on the same normalised input: ``mlp(h)`` becomes
  ``mlp(h) + mlp_scale * adapter(h)`` (MSA's ``MLP_Adapter``, scale 0.5).
- ``placement`` "both" (default) inserts both: two adapters per block.

What trains: the adapters and, with ``train_decoder`` (default true; SAM-Adapter fine-tunes the
decoder with its adapters), SAM's mask decoder except what the loss cannot reach: the
IoU head (the HQ-SAM loss has no IoU term) and, unless ``multimask_output``, the hypernetwork MLPs
of mask tokens 1-3 (their masks are dropped before the loss). The patch embedding, the encoder
blocks' own weights, the neck and the prompt encoder stay frozen.

Params (``methods.adapter``): ``ratio`` 0.25, ``placement`` "both", ``mlp_scale`` 0.5,
``train_decoder`` true, ``init_seed`` 0 (tiny's random SAM weights and the adapters' ``down``
init), the loss knobs of :class:`baselines.finetuned.FineTunedSAM`, ``multimask_output`` as zero-shot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from segment_anything.modeling import ImageEncoderViT, MaskDecoder
from torch import Tensor, nn

from baselines.finetuned import FineTunedConfig, FineTunedSAM, seeded_init
from spt.config.schema import setting
from spt.errors import SuiteError

PLACEMENTS = ("both", "attn", "mlp")


class BottleneckAdapter(nn.Module):
    """(..., dim) -> (..., dim): ``up(GELU(down(x)))``, ``up`` zero-initialised (output 0)."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, width)
        self.act = nn.GELU()
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.act(self.down(x)))


class AttentionWithAdapter(nn.Module):
    """SAM's encoder attention followed by an adapter with a skip: ``a + adapter(a)``.

    (B, H, W, dim) -> (B, H, W, dim), the shapes of the wrapped ``Attention``.
    """

    def __init__(self, attn: nn.Module, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.attn = attn
        self.adapter = adapter

    def forward(self, x: Tensor) -> Tensor:
        attended = self.attn(x)
        return attended + self.adapter(attended)


class MLPWithParallelAdapter(nn.Module):
    """SAM's encoder MLP plus a scaled adapter on the same input: ``mlp(h) + s * adapter(h)``.

    (..., dim) -> (..., dim).
    """

    def __init__(self, mlp: nn.Module, adapter: BottleneckAdapter, scale: float) -> None:
        super().__init__()
        self.mlp = mlp
        self.adapter = adapter
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x) + self.scale * self.adapter(x)


def add_encoder_adapters(
    encoder: ImageEncoderViT, ratio: float, placement: str, mlp_scale: float
) -> list[BottleneckAdapter]:
    """Wrap every block's ``attn`` and/or ``mlp`` with an adapter (in place); return them."""
    if placement not in PLACEMENTS:
        raise SuiteError(
            f"methods.adapter placement {placement!r}: use one of {', '.join(PLACEMENTS)}"
        )
    added = []
    for block in encoder.blocks:
        dim = block.norm1.normalized_shape[0]
        width = int(dim * ratio)
        if width < 1:
            raise SuiteError(
                f"methods.adapter ratio {ratio} gives no adapter width at dim {dim}; raise it"
            )
        device = next(block.parameters()).device
        if placement in ("both", "attn"):
            adapter = BottleneckAdapter(dim, width).to(device)
            block.attn = AttentionWithAdapter(block.attn, adapter)
            added.append(adapter)
        if placement in ("both", "mlp"):
            adapter = BottleneckAdapter(dim, width).to(device)
            block.mlp = MLPWithParallelAdapter(block.mlp, adapter, mlp_scale)
            added.append(adapter)
    return added


def unfreeze_decoder(decoder: MaskDecoder, multimask_output: bool) -> None:
    """Make trainable every decoder parameter the single-output mask loss can reach."""
    decoder.requires_grad_(True)
    decoder.iou_prediction_head.requires_grad_(False)
    if not multimask_output:
        for mlp in decoder.output_hypernetworks_mlps[1:]:
            mlp.requires_grad_(False)


@dataclass(frozen=True)
class AdapterConfig(FineTunedConfig):
    """``methods.adapter``: bottleneck adapters in the encoder blocks."""

    ratio: float = setting(0.25, "adapter width = encoder dim x ratio", minimum=0, min_open=True)
    placement: Literal["both", "attn", "mlp"] = setting(
        "both", "where the adapters go (Medical SAM Adapter placement)"
    )
    mlp_scale: float = setting(0.5, "scale of the adapter beside the MLP")
    train_decoder: bool = setting(True, "also tune the mask decoder (not its IoU head)")


class AdapterSAM(FineTunedSAM):
    """SAM with bottleneck adapters in the encoder blocks; the mask decoder trains by default."""

    name = "adapter"
    stages = ("final",)
    config_class = AdapterConfig

    def __init__(self, backbone, checkpoint=None, device="cpu", params=None) -> None:
        super().__init__(backbone, checkpoint, device, params)
        own = self.config
        self.ratio, self.placement = own.ratio, own.placement
        self.mlp_scale, self.train_decoder = own.mlp_scale, own.train_decoder
        with seeded_init(self.init_seed, self.device):
            self.adapters = add_encoder_adapters(
                self.sam.image_encoder, self.ratio, self.placement, self.mlp_scale
            )
        if self.train_decoder:
            unfreeze_decoder(self.sam.mask_decoder, self.multimask_output)
        self.sam.eval()
