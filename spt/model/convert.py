"""Converting between the official SAM-SPT checkpoint layout and :class:`SPTModel`'s, both ways.

Official layout (THU-MIG/SAM-SPT, loralib LoRA), suite layout on the right:

- ``mask_decoder.*`` is the decoder that makes the draft   -> ``draft_decoder.*``
- ``draft_decoder.*`` is the decoder that makes the final  -> ``final_decoder.*``
  (the official names are swapped relative to what the decoders do)
- encoder ``attn.qkv.{weight,bias}``                       -> ``attn.qkv.base.{weight,bias}``
- encoder ``attn.qkv.lora_A`` (2r, in): rows [0:r] for q, [r:2r] for v -> ``lora_A_q``, ``lora_A_v``
- encoder ``attn.qkv.lora_B`` (2*dim, r): rows [0:dim] for q, [dim:] for v -> ``lora_B_q``, ``lora_B_v``
- decoder ``{q,v}_proj.{weight,bias}``                     -> ``{q,v}_proj.base.{weight,bias}``
- decoder ``{q,v}_proj.lora_{A,B}``                        -> unchanged
- ``transformer.layers.N.lora_sim_scale`` (C,)             -> ``...layers.N.relation_adapter.gamma``
- everything else                                          -> unchanged

The update scale, ``lora_alpha / r``, is the same in both layouts and is not stored in either.
The conversion is exact and invertible: official -> suite -> official gives back every tensor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from spt.errors import SuiteError
from spt.model.spt_model import SPTConfig, SPTModel, build_spt
from spt.sam import get_spec
from spt.sam.checkpoint import read_state_dict

# official prefix -> suite prefix. The official names are swapped; this is the one place they live.
_DECODER_NAMES = {"mask_decoder.": "draft_decoder.", "draft_decoder.": "final_decoder."}
_DECODER_NAMES_BACK = {suite: official for official, suite in _DECODER_NAMES.items()}

_QKV = re.compile(r"(image_encoder\.blocks\.\d+\.attn\.qkv)\.(weight|bias|lora_A|lora_B)")
_SUITE_QKV = re.compile(
    r"(image_encoder\.blocks\.\d+\.attn\.qkv)\.(base\.weight|base\.bias|lora_[AB]_[qv])"
)
_DECODER_QV = re.compile(r"((?:draft|final)_decoder\.transformer\..+\.[qv]_proj)\.(weight|bias)")
_SUITE_DECODER_QV = re.compile(
    r"((?:draft|final)_decoder\.transformer\..+\.[qv]_proj)\.base\.(weight|bias)"
)
_GAMMA_OFFICIAL = ".lora_sim_scale"
_GAMMA_SUITE = ".relation_adapter.gamma"


def _rename_prefix(key: str, names: Mapping[str, str]) -> str:
    for old, new in names.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def official_to_suite(official: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official SPT state_dict (full, or only its LoRA/gamma tensors) in the suite's names."""
    suite: dict[str, Tensor] = {}
    for key, tensor in official.items():
        key = _rename_prefix(key, _DECODER_NAMES)
        if match := _QKV.fullmatch(key):
            prefix, name = match.groups()
            if name in ("weight", "bias"):
                suite[f"{prefix}.base.{name}"] = tensor
            else:
                # Two stacked groups: q first, then v (loralib MergedLinear, enable_lora [T, F, T]).
                if tensor.shape[0] % 2:
                    raise SuiteError(
                        f"{key} has {tensor.shape[0]} rows; an official qkv LoRA stacks two equal "
                        "groups (q and v): not an official SPT checkpoint"
                    )
                half = tensor.shape[0] // 2
                suite[f"{prefix}.{name}_q"] = tensor[:half].clone()
                suite[f"{prefix}.{name}_v"] = tensor[half:].clone()
        elif match := _DECODER_QV.fullmatch(key):
            suite[f"{match[1]}.base.{match[2]}"] = tensor
        elif key.endswith(_GAMMA_OFFICIAL):
            suite[key[: -len(_GAMMA_OFFICIAL)] + _GAMMA_SUITE] = tensor
        else:
            suite[key] = tensor
    return suite


def suite_to_official(suite: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`official_to_suite`."""
    official: dict[str, Tensor] = {}
    qkv_groups: dict[str, dict[str, Tensor]] = {}
    for key, tensor in suite.items():
        if match := _SUITE_QKV.fullmatch(key):
            prefix, name = match.groups()
            if name.startswith("base."):
                official[f"{prefix}.{name[len('base.') :]}"] = tensor
            else:
                qkv_groups.setdefault(prefix, {})[name] = tensor
                if len(qkv_groups[prefix]) == 4:
                    group = qkv_groups.pop(prefix)
                    for matrix in ("lora_A", "lora_B"):
                        official[f"{prefix}.{matrix}"] = torch.cat(
                            [group[f"{matrix}_q"], group[f"{matrix}_v"]], dim=0
                        )
            continue
        if match := _SUITE_DECODER_QV.fullmatch(key):
            key = f"{match[1]}.{match[2]}"
        elif key.endswith(_GAMMA_SUITE):
            key = key[: -len(_GAMMA_SUITE)] + _GAMMA_OFFICIAL
        official[_rename_prefix(key, _DECODER_NAMES_BACK)] = tensor
    if qkv_groups:
        prefix, group = next(iter(qkv_groups.items()))
        raise SuiteError(
            f"{prefix}: has {sorted(group)} but an encoder qkv LoRA needs lora_A_q, lora_A_v, "
            "lora_B_q and lora_B_v together"
        )
    return official


def official_name_of_trainable(suite_name: str) -> str:
    """The official parameter name of a trainable suite parameter (qkv LoRA: its stacked tensor)."""
    if match := _SUITE_QKV.fullmatch(suite_name):
        return f"{match[1]}.{match[2][: len('lora_A')]}"
    return next(iter(suite_to_official({suite_name: torch.empty(0)})))


# ---- reading official checkpoint files -------------------------------------------------------


def _lora_rank(official: Mapping[str, Tensor], path: Path) -> int:
    ranks = {t.shape[0] // 2 for k, t in official.items() if _QKV.fullmatch(k) and k.endswith("A")}
    ranks |= {t.shape[0] for k, t in official.items() if k.endswith("_proj.lora_A")}
    if len(ranks) != 1:
        raise SuiteError(
            f"{path}: LoRA ranks {sorted(ranks)} differ between layers; the suite supports one "
            "rank for the whole model"
        )
    return ranks.pop()


def _check_official(official: Mapping[str, Tensor], path: Path, backbone: str) -> None:
    has_gamma = any(k.endswith(_GAMMA_OFFICIAL) for k in official)
    qkv_a = {k: t for k, t in official.items() if k.endswith("attn.qkv.lora_A")}
    if not has_gamma or not qkv_a:
        hint = (
            "it is in the suite's own layout: load it with SPTModel.load_state_dict"
            if any(k.startswith("final_decoder.") for k in official)
            else "expected a THU-MIG/SAM-SPT checkpoint (keys ending in lora_sim_scale and "
            "attn.qkv.lora_A)"
        )
        raise SuiteError(f"{path}: not an official SPT checkpoint; {hint}")
    spec = get_spec(backbone)
    width = next(iter(qkv_a.values())).shape[1]
    if width != spec.encoder_dim or len(qkv_a) != spec.encoder_depth:
        raise SuiteError(
            f"{path}: its encoder LoRA fits width {width} and depth {len(qkv_a)}, but backbone "
            f"{backbone} has {spec.encoder_dim} and {spec.encoder_depth}; pick the backbone the "
            "checkpoint was trained on"
        )


def load_official_spt(
    path: str | Path,
    backbone: str,
    sam_checkpoint: str | Path | None = None,
    config: SPTConfig | None = None,
    device: torch.device | str = "cpu",
) -> SPTModel:
    """Build :class:`SPTModel` from an official SAM-SPT checkpoint file.

    The LoRA rank is read from the tensor shapes (it overrides ``config.lora_rank``);
    ``lora_alpha`` and the relation options are not stored in the file and come from ``config``
    (official defaults when None). A file that holds the whole model is loaded strictly. A file
    that holds only the LoRA and gamma tensors is laid over SAM's weights from ``sam_checkpoint``,
    with both decoders starting from SAM's mask decoder, as the official loader does.
    """
    path = Path(path)
    if path.is_dir():
        raise SuiteError(f"{path}: is a directory; pass the official SPT checkpoint file")
    if not path.is_file():
        raise SuiteError(f"{path}: SPT checkpoint not found; check the path")
    official = read_state_dict(path)
    if official and all(k.startswith("module.") for k in official):  # saved from DDP
        official = {k[len("module.") :]: t for k, t in official.items()}
    _check_official(official, path, backbone)
    config = replace(config or SPTConfig(), lora_rank=_lora_rank(official, path))
    suite = official_to_suite(official)

    model = build_spt(backbone, config, None if sam_checkpoint is None else str(sam_checkpoint))
    expected = model.state_dict()
    unexpected = sorted(set(suite) - set(expected))
    missing = sorted(set(expected) - set(suite))
    trainable_missing = [k for k, _ in model.named_trainable_parameters() if k not in suite]
    if unexpected or trainable_missing:
        raise SuiteError(
            f"{path}: keys do not fit SPT on {backbone} (unexpected {_few(unexpected)}, missing "
            f"{_few(trainable_missing)}); pick the backbone the checkpoint was trained on"
        )
    if missing and sam_checkpoint is None:
        raise SuiteError(
            f"{path}: holds only part of the model ({len(missing)} SAM tensors absent, e.g. "
            f"{missing[0]}); pass the SAM checkpoint it was tuned from as sam_checkpoint"
        )
    for key, tensor in suite.items():
        if tensor.shape != expected[key].shape:
            raise SuiteError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, SPT on {backbone} expects "
                f"{tuple(expected[key].shape)}; pick the backbone the checkpoint was trained on"
            )
    model.load_state_dict(suite, strict=not missing)
    return model.to(device).eval()


def _few(keys: list[str], n: int = 3) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")
