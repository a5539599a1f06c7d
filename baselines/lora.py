"""LoRA baseline: SAM's image encoder tuned with peft's LoRA, the mask decoder frozen by default.

Where the LoRA sits (``targets``):

- ``"qkv"`` (default, what ``target_modules=["qkv"]`` gives any peft user): one LoRA pair on the
  fused ``attn.qkv`` Linear of every encoder block. A single A (r x dim) feeds a B (3*dim x r), so
  q, k and v are all adapted and share A.
- ``"qv"``: q and v only, as SPT's LoRA. peft can only target whole modules and cannot split a
  fused Linear, so every ``attn.qkv`` is first replaced by :class:`SplitQKV`, three Linear children
  ``q``, ``k``, ``v`` holding the fused layer's row blocks (same values; the output is their
  concatenation, equal to the fused output), and peft then targets ``attn.qkv.q`` and ``attn.qkv.v``.

With ``decoder: true`` the mask decoder's ``q_proj`` and ``v_proj`` of every attention (self, both
cross attentions of each two-way block, and the final token-to-image attention; SPT's decoder LoRA
set) get LoRA too. Everything else (patch embedding, MLPs, neck, prompt encoder, the decoder when
``decoder`` is false) stays frozen at SAM's weights. peft initialises A kaiming-uniform and B at
zero, so a fresh model computes exactly what SAM computes.

Both settings have the same parameter count: r * (dim + 3*dim) per block for ``qkv`` and
2 * r * (dim + dim) for ``qv`` (294,912 for ViT-B at r = 8).

peft on a plain ``nn.Module`` (peft 0.21.2): ``get_peft_model(sam, LoraConfig(target_modules=
<regex>))`` injects ``lora.Linear`` layers into SAM in place and returns a ``PeftModel``; the
regex is matched against full module names (``re.fullmatch``). ``PeftModel.save_pretrained`` writes
``adapter_config.json`` + ``adapter_model.safetensors`` (and a README model card), and
``PeftModel.from_pretrained(sam, folder)`` loads them back onto a freshly built SAM; for ``qv``
the SAM must be split with :func:`split_encoder_qkv` first, because the saved names contain it.

Params (``methods.lora``): ``rank`` 8; ``alpha`` 1 (scale alpha / rank = 1/8, SPT's official LoRA
scale, so with SPT's training recipe the two differ only in where the LoRA sits and in SPT's own
modules); ``dropout`` 0 (peft's dropout draws from torch's global RNG); ``targets`` "qkv";
``decoder`` false; ``peft_adapter`` null (a folder written by :meth:`LoRASAM.save_peft` to load);
``init_seed`` 0 (tiny's random SAM weights and the LoRA A init); the loss knobs of
:class:`FineTunedSAM`; ``multimask_output`` as zero-shot SAM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from baselines.finetuned import FineTunedConfig, FineTunedSAM, seeded_init
from spt.config.schema import setting
from spt.errors import SuiteError

LORA_TARGETS = ("qkv", "qv")
ENCODER_PATTERNS = {
    "qkv": r"image_encoder\.blocks\.\d+\.attn\.qkv",
    "qv": r"image_encoder\.blocks\.\d+\.attn\.qkv\.(q|v)",
}
# q_proj / v_proj of the self and both cross attentions of every two-way block, and of the final
# token-to-image attention: the decoder set SPT adapts.
DECODER_PATTERN = (
    r"mask_decoder\.transformer\.(layers\.\d+\."
    r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
    r"|final_attn_token_to_image)\.(q_proj|v_proj)"
)
PEFT_CONFIG_FILE = "adapter_config.json"


class SplitQKV(nn.Module):
    """A fused qkv Linear (dim -> 3*dim) as three Linear children ``q``, ``k``, ``v`` (dim -> dim).

    The children hold the fused weight's and bias's row blocks 0:dim, dim:2dim, 2dim:3dim, so
    each output element is the same dot product as before. Input (..., dim) -> output
    (..., 3*dim), ordered q, k, v as SAM's encoder attention reshapes it.
    """

    def __init__(self, fused: nn.Linear) -> None:
        super().__init__()
        if fused.out_features != 3 * fused.in_features:
            raise ValueError(
                f"a fused qkv layer maps dim -> 3*dim, got {fused.in_features} -> "
                f"{fused.out_features}"
            )
        dim = fused.in_features
        has_bias = fused.bias is not None
        for index, part in enumerate(("q", "k", "v")):
            rows = slice(index * dim, (index + 1) * dim)
            linear = nn.Linear(dim, dim, bias=has_bias, device=fused.weight.device)
            with torch.no_grad():
                linear.weight.copy_(fused.weight[rows])
                if has_bias:
                    linear.bias.copy_(fused.bias[rows])
            linear.requires_grad_(fused.weight.requires_grad)
            setattr(self, part, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def split_encoder_qkv(encoder: ImageEncoderViT) -> None:
    """Replace every block's ``attn.qkv`` by :class:`SplitQKV` (in place)."""
    for block in encoder.blocks:
        if not isinstance(block.attn.qkv, nn.Linear):
            raise ValueError("the image encoder's qkv layers are already wrapped")
        block.attn.qkv = SplitQKV(block.attn.qkv)


def lora_target_pattern(targets: str, decoder: bool) -> str:
    """The regex peft fully matches against module names to choose the layers to adapt."""
    if targets not in LORA_TARGETS:
        raise SuiteError(f"methods.lora targets {targets!r}: use one of {', '.join(LORA_TARGETS)}")
    pattern = ENCODER_PATTERNS[targets]
    return f"({pattern}|{DECODER_PATTERN})" if decoder else pattern


@dataclass(frozen=True)
class LoRAConfig(FineTunedConfig):
    """``methods.lora``: peft LoRA on the encoder attention (and optionally the decoder)."""

    rank: int = setting(8, "LoRA rank r", minimum=1)
    alpha: float = setting(
        1.0, "LoRA alpha; the update is scaled by alpha / rank", minimum=0, min_open=True
    )
    dropout: float = setting(0.0, "LoRA dropout", minimum=0, maximum=1, max_open=True)
    targets: Literal["qkv", "qv"] = setting(
        "qkv", "qkv: the whole fused qkv (plain peft); qv: q and v only, as SPT"
    )
    decoder: bool = setting(False, "also adapt the decoder's q_proj / v_proj (SPT's decoder set)")
    peft_adapter: str | None = setting(None, "a saved peft adapter folder to start from")


class LoRASAM(FineTunedSAM):
    """SAM with peft LoRA on the encoder attention (and optionally the decoder's q/v)."""

    name = "lora"
    stages = ("final",)
    config_class = LoRAConfig

    def __init__(self, backbone, checkpoint=None, device="cpu", params=None) -> None:
        super().__init__(backbone, checkpoint, device, params)
        own = self.config
        self.rank, self.alpha, self.dropout = own.rank, own.alpha, own.dropout
        self.targets, self.decoder = own.targets, own.decoder
        config = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=lora_target_pattern(self.targets, self.decoder),
            bias="none",
        )
        if self.targets == "qv":
            split_encoder_qkv(self.sam.image_encoder)
        adapter = own.peft_adapter
        with seeded_init(self.init_seed, self.device):
            if adapter:
                self.peft_model = _load_peft(self.sam, Path(adapter), config)
            else:
                # Marks only the LoRA tensors trainable (bias "none"): the rest of SAM is frozen.
                self.peft_model = get_peft_model(self.sam, config)
        self.peft_model.to(self.device).eval()

    @property
    def network(self) -> nn.Module:
        return self.peft_model

    def save_peft(self, folder: str | Path) -> Path:
        """Write a peft-native adapter (adapter_config.json + adapter_model.safetensors)."""
        folder = Path(folder)
        self.peft_model.save_pretrained(str(folder))
        return folder


def _load_peft(sam: nn.Module, folder: Path, expected: LoraConfig) -> PeftModel:
    """Load a saved adapter onto ``sam`` with peft, after checking it fits the params."""
    config_path = folder / PEFT_CONFIG_FILE
    if not config_path.is_file():
        raise SuiteError(
            f"methods.lora peft_adapter {folder}: no {PEFT_CONFIG_FILE} there; give a folder "
            "written by LoRASAM.save_peft"
        )
    saved = json.loads(config_path.read_text())
    for key in ("r", "lora_alpha", "target_modules"):
        if saved.get(key) != getattr(expected, key):
            raise SuiteError(
                f"{config_path}: {key} is {saved.get(key)!r} but methods.lora params give "
                f"{getattr(expected, key)!r}; set rank, alpha, targets and decoder as trained"
            )
    # is_trainable keeps the LoRA tensors trainable, so a loaded adapter can be tuned further.
    return PeftModel.from_pretrained(sam, str(folder), is_trainable=True)
