"""SPT (Self-Perception Tuning): a LoRA-tuned SAM that drafts a mask, then refines it.

Per image, with SAM's image encoder E and prompt encoder P (shared) and two mask decoders that
both start as SAM's pretrained decoder:

1. ``embedding = E(image)`` and, once per image, the visual relation S of its tokens
   (:mod:`spt.model.relation`).
2. Draft: the **draft decoder** runs on the prompt's sparse embedding and P's dense embedding (the
   no-mask embedding, or the user's mask prompt), with S injected into every selected two-way block
   (:mod:`spt.model.vra`). Single-mask output (mask token 0): the draft low-res logits.
3. Refine: the draft logits, detached and raw (no sigmoid, no threshold), go through P's
   ``mask_downscaling`` as a mask prompt; the **final decoder** runs on the same sparse embedding,
   that dense embedding and the same S, and gives the final low-res logits.

``iou_predictions`` is the draft pass's IoU head output, as in the official code (which discards
the final pass's); the final pass's is returned too, as ``final_iou_predictions``.

Trainable: LoRA on q and v of every encoder block's fused qkv, LoRA on ``q_proj`` and ``v_proj`` of
every attention of both decoders, and each relation adapter's gamma. Everything else is frozen.
With the default init (LoRA B = 0, gamma = 0) SPT at step 0 is SAM run twice.

The official code calls the draft decoder ``mask_decoder`` and the final one ``draft_decoder``;
only :mod:`spt.model.convert` knows those names.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import MaskDecoder, Sam
from torch import Tensor, nn
from torch.nn import functional as F

from spt.model.lora import LoRAFusedQKV, LoRALinear, add_decoder_lora, add_encoder_lora
from spt.model.relation import tokens_of, visual_relation
from spt.model.vra import RelationAdapter, add_relation_adapters, relation_in_use
from spt.sam import build_sam, get_spec, load_sam


@dataclass(frozen=True)
class SPTConfig:
    """SPT's options; the defaults are the official code's (official argument in brackets)."""

    lora_rank: int = 8  # r
    lora_alpha: float = 1.0  # the update is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0
    relation_threshold: float = 0.0  # [vatt_alpha] keep S_ij > threshold / N; 0 = off
    relation_blocks: tuple[int, ...] | None = None  # [vatt_pos = -1] two-way blocks; None = all
    gamma_init: float = 0.0  # [vatt_init "zero"] initial value of every gamma entry
    detach_draft: bool = True  # the draft logits feed the final decoder without gradient
    detach_relation_for_draft: bool = False  # [vatt_mask_detach] relation without gradient in draft


@dataclass
class SPTOutput:
    """One decode. P = number of prompts for the image, (h, w) = 4x the embedding grid."""

    draft_logits: Tensor  # (P, 1, h, w) low-res logits of the draft decoder
    final_logits: Tensor  # (P, 1, h, w) low-res logits of the final decoder: the prediction
    iou_predictions: Tensor  # (P, 1) IoU head of the draft pass (what the official code returns)
    final_iou_predictions: Tensor  # (P, 1) IoU head of the final pass
    sparse_embeddings: Tensor  # (P, T, C) prompt tokens, shared by both decoders
    mask_prompt_embeddings: Tensor  # (P, C, h/4, w/4) the draft as dense prompt of the final pass


class SPTModel(nn.Module):
    """SAM's encoders plus a draft decoder and a final decoder, with LoRA and relation adapters.

    Takes over ``sam``'s modules (its encoder gets LoRA in place, its mask decoder becomes the draft
    decoder and a deep copy the final decoder); do not use ``sam`` afterwards.
    """

    def __init__(self, sam: Sam, config: SPTConfig | None = None):
        super().__init__()
        self.config = config = config or SPTConfig()
        self.image_encoder = sam.image_encoder
        self.prompt_encoder = sam.prompt_encoder
        self.draft_decoder: MaskDecoder = sam.mask_decoder
        self.final_decoder: MaskDecoder = copy.deepcopy(sam.mask_decoder)
        self.register_buffer("pixel_mean", sam.pixel_mean.clone(), persistent=False)
        self.register_buffer("pixel_std", sam.pixel_std.clone(), persistent=False)

        lora = (config.lora_rank, config.lora_alpha, config.lora_dropout)
        add_encoder_lora(self.image_encoder, *lora)
        for decoder in (self.draft_decoder, self.final_decoder):
            add_decoder_lora(decoder, *lora)
            add_relation_adapters(decoder, config.relation_blocks, config.gamma_init)
        self.freeze_base()

    # ---- parameters -------------------------------------------------------------------------

    def freeze_base(self) -> None:
        """Make exactly the LoRA matrices and the gammas trainable, and nothing else."""
        self.requires_grad_(False)
        for module in self.modules():
            if isinstance(module, LoRALinear | LoRAFusedQKV | RelationAdapter):
                # Their own parameters are the LoRA matrices or gamma; the base layer is a child.
                for param in module.parameters(recurse=False):
                    param.requires_grad_(True)

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for _, p in self.named_trainable_parameters())

    # ---- forward ----------------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        return self.image_encoder.img_size

    def preprocess(self, image: Tensor) -> Tensor:
        """Image (3, H, W) in 0..255 -> normalised with SAM's mean/std, zero-padded at the bottom
        and right to (3, S, S), S the encoder's input size (as SAM and the official code do)."""
        normalised = (image - self.pixel_mean) / self.pixel_std
        h, w = image.shape[-2:]
        return F.pad(normalised, (0, self.image_size - w, 0, self.image_size - h))

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Preprocessed images (B, 3, S, S) -> embedding (B, C, h, w) and relation (B, hw, hw)."""
        embedding = self.image_encoder(images)
        relation = visual_relation(tokens_of(embedding), self.config.relation_threshold)
        return embedding, relation

    def decode(
        self,
        embedding: Tensor,
        relation: Tensor,
        points: tuple[Tensor, Tensor] | None = None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
    ) -> SPTOutput:
        """Draft then final mask for one image's P prompts.

        embedding (1, C, h, w) and relation (1, hw, hw) of one image; points ((P, K, 2) xy,
        (P, K) labels), boxes (P, 4) xyxy, both in the input frame; mask_input (P, 1, 4h, 4w)
        an optional mask prompt for the draft pass (logits, as SAM takes it).
        """
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        return self.decode_embedded(embedding, relation, sparse, dense)

    def decode_embedded(
        self, embedding: Tensor, relation: Tensor, sparse: Tensor, dense: Tensor
    ) -> SPTOutput:
        """:meth:`decode` on prompts already embedded: sparse (P, T, C), dense (P, C, h, w)."""
        image_pe = self.prompt_encoder.get_dense_pe()
        draft_relation = relation.detach() if self.config.detach_relation_for_draft else relation
        with relation_in_use(self.draft_decoder, draft_relation):
            draft, draft_iou = self.draft_decoder(
                image_embeddings=embedding,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        mask_prompt = draft.detach() if self.config.detach_draft else draft
        mask_prompt_embeddings = self.prompt_encoder.mask_downscaling(mask_prompt)
        with relation_in_use(self.final_decoder, relation):
            final, final_iou = self.final_decoder(
                image_embeddings=embedding,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=mask_prompt_embeddings,
                multimask_output=False,
            )
        return SPTOutput(draft, final, draft_iou, final_iou, sparse, mask_prompt_embeddings)

    def forward(
        self,
        image: Tensor,
        points: tuple[Tensor, Tensor] | None = None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
    ) -> SPTOutput:
        """Encode one preprocessed image (1, 3, S, S) and decode its prompts."""
        embedding, relation = self.encode(image)
        return self.decode(embedding, relation, points, boxes, mask_input)


def build_spt(
    backbone: str,
    config: SPTConfig | None = None,
    sam_checkpoint: str | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> SPTModel:
    """SPT on the named SAM backbone, from a SAM checkpoint (or random init when None).

    ``seed`` fixes SAM's random init (without a checkpoint) and LoRA's A matrices; the global RNG
    is left as it was.
    """
    sam = load_sam(backbone, sam_checkpoint, "cpu", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SPTModel(sam, config)
    return model.to(device).eval()


def trainable_parameter_count_of(backbone: str, config: SPTConfig | None = None) -> int:
    """Trainable parameters of SPT on ``backbone`` without allocating it (built on 'meta')."""
    spec = get_spec(backbone)
    with torch.device("meta"):
        if spec.published_file is not None:
            sam = sam_model_registry[backbone](checkpoint=None)
        else:
            sam = build_sam(backbone)
        return SPTModel(sam, config).trainable_parameter_count()
