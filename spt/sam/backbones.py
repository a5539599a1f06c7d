"""SAM backbones: the three published ViT sizes and a tiny one of the same architecture.

vit_b / vit_l / vit_h are built through ``segment_anything.sam_model_registry`` (1024 px input,
256-d prompt/decoder width). ``tiny`` assembles the same segment_anything modules at a small size;
it is the configuration of the official SPT parity fixture (128 px input, 8x8 embedding grid), so
tests, benchmarks and the embedded default all run it on CPU in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from spt.errors import SuiteError
from spt.sam.portable import use_exact_kernels

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture of one SAM backbone.

    ``published_file`` is the file name Meta publishes the checkpoint under; its last six hex
    characters are the start of the file's sha256 (the torch.hub convention).
    """

    name: str
    image_size: int
    patch_size: int
    encoder_dim: int
    encoder_depth: int
    encoder_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    prompt_dim: int
    decoder_mlp_dim: int
    decoder_heads: int
    mask_in_chans: int
    iou_head_hidden_dim: int
    published_file: str | None = None
    download_url: str | None = None

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for the published models, 8 for tiny)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution logits and of the mask-prompt input (4x the grid)."""
        return 4 * self.embedding_size

    @property
    def published_sha256_prefix(self) -> str | None:
        if self.published_file is None:
            return None
        return self.published_file.rsplit(".", 1)[0].rsplit("_", 1)[1]


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

BACKBONES: dict[str, BackboneSpec] = {
    "vit_b": BackboneSpec(
        "vit_b",
        1024,
        16,
        768,
        12,
        12,
        (2, 5, 8, 11),
        14,
        256,
        2048,
        8,
        16,
        256,
        "sam_vit_b_01ec64.pth",
        _SAM_URL + "sam_vit_b_01ec64.pth",
    ),
    "vit_l": BackboneSpec(
        "vit_l",
        1024,
        16,
        1024,
        24,
        16,
        (5, 11, 17, 23),
        14,
        256,
        2048,
        8,
        16,
        256,
        "sam_vit_l_0b3195.pth",
        _SAM_URL + "sam_vit_l_0b3195.pth",
    ),
    "vit_h": BackboneSpec(
        "vit_h",
        1024,
        16,
        1280,
        32,
        16,
        (7, 15, 23, 31),
        14,
        256,
        2048,
        8,
        16,
        256,
        "sam_vit_h_4b8939.pth",
        _SAM_URL + "sam_vit_h_4b8939.pth",
    ),
    # The official SPT parity fixture's configuration (shared/fixtures/README.md).
    "tiny": BackboneSpec("tiny", 128, 16, 64, 2, 2, (1,), 4, 32, 64, 2, 16, 32),
}


def get_spec(name: str) -> BackboneSpec:
    """Look up a backbone by name, with an error that lists the valid names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise SuiteError(
            f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}"
        ) from None


def build_sam(name: str, seed: int = 0) -> Sam:
    """Build a randomly initialised SAM of the named backbone, in eval mode, on CPU.

    Published backbones go through segment_anything's registry; ``tiny`` is assembled from the
    same modules. ``seed`` fixes the random initialisation (it matters only when no checkpoint is
    loaded afterwards, as for ``tiny``). The global RNG state is restored afterwards. Its
    ``LayerNorm2d`` modules use the exact square root of :mod:`spt.sam.portable`, so the model
    computes the same bits on every CPU.
    """
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.published_file is not None:
            sam = sam_model_registry[name](checkpoint=None)
        else:
            sam = _assemble(spec)
    return use_exact_kernels(sam).eval()


def _assemble(spec: BackboneSpec) -> Sam:
    grid = spec.embedding_size
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            embed_dim=spec.encoder_dim,
            depth=spec.encoder_depth,
            num_heads=spec.encoder_heads,
            mlp_ratio=4,
            out_chans=spec.prompt_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=spec.window_size,
            global_attn_indexes=spec.global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(spec.image_size, spec.image_size),
            mask_in_chans=spec.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=spec.prompt_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_heads,
            ),
            transformer_dim=spec.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def resolve_device(requested: str) -> torch.device:
    """``cpu`` (default), ``cuda`` / ``cuda:N`` when present, or ``auto`` (cuda if present)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SuiteError(
                f"--device {requested} was asked for but torch sees no CUDA device; "
                "use --device cpu"
            )
        return torch.device(requested)
    if requested == "cpu":
        return torch.device("cpu")
    raise SuiteError(f"unknown device {requested!r}: use cpu, cuda, cuda:N or auto")
