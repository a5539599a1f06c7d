"""Safe loading of SAM checkpoints by path, with the checks a user needs when a file is wrong.

Every failure is a :class:`SuiteError` whose one-line message names the file and the fix:
missing file, a directory, published file name whose sha256 does not start with the published
prefix, bytes that are not a torch file at all (text, an image: told apart by their first bytes),
a truncated or corrupt torch file (any exception of the unpickler), a pickle that would run code
on load (refused by ``torch.load(weights_only=True)``, never executed), a state_dict of another
backbone, or keys that do not fit SAM.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from spt.artifacts import file_sha256
from spt.errors import SuiteError
from spt.sam.backbones import BACKBONES, build_sam, get_spec

CHECKPOINT_DIR_ENV = "SPT_SAM_CHECKPOINT_DIR"
DEFAULT_CHECKPOINT_DIR = Path("checkpoints")
_PATCH_KEY = "image_encoder.patch_embed.proj.weight"


@dataclass(frozen=True)
class CheckpointChoice:
    """Which weights a backbone would be built with, and why."""

    backbone: str
    path: Path | None  # None: random initialisation (tiny without a checkpoint)
    source: str  # human-readable origin of the choice


def choose_checkpoint(
    backbone: str,
    configured: Mapping[str, str | None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> CheckpointChoice:
    """Decide which file a backbone loads.

    Order: an explicit path in ``configured`` (params.yaml ``sam.checkpoints``), else the published
    file name inside ``checkpoint_dir`` (argument, then ``$SPT_SAM_CHECKPOINT_DIR``, then
    ``checkpoints/``). ``tiny`` without an explicit path is randomly initialised.
    """
    spec = get_spec(backbone)
    configured = configured or {}
    if not isinstance(configured, Mapping):
        raise SuiteError(
            f"sam.checkpoints must map backbone names to checkpoint paths (e.g. {{vit_b: "
            f"/models/b.pth}}), got {configured!r}; fix it in the params file"
        )
    explicit = configured.get(backbone)
    if explicit is not None and not _is_path(explicit):
        raise SuiteError(
            f"sam.checkpoints.{backbone} must be a checkpoint file path, got {explicit!r}; "
            "fix it in the params file"
        )
    if explicit:
        return CheckpointChoice(backbone, Path(explicit), "sam.checkpoints in params")
    if spec.published_file is None:
        return CheckpointChoice(backbone, None, "random init (no published checkpoint)")
    if checkpoint_dir is not None and not _is_path(checkpoint_dir):
        raise SuiteError(
            f"sam.checkpoint_dir must be a folder path, got {checkpoint_dir!r}; fix it in the "
            "params file"
        )
    if checkpoint_dir is not None:
        folder, source = Path(checkpoint_dir), "sam.checkpoint_dir in params"
    elif os.environ.get(CHECKPOINT_DIR_ENV):
        folder, source = Path(os.environ[CHECKPOINT_DIR_ENV]), f"${CHECKPOINT_DIR_ENV}"
    else:
        folder, source = DEFAULT_CHECKPOINT_DIR, "default folder"
    return CheckpointChoice(backbone, folder / spec.published_file, source)


def verify_published_hash(path: Path) -> None:
    """If ``path`` carries a published SAM file name, check its sha256 prefix."""
    for spec in BACKBONES.values():
        if spec.published_file == path.name:
            prefix = spec.published_sha256_prefix
            actual = file_sha256(path)
            if not actual.startswith(prefix):
                raise SuiteError(
                    f"{path}: sha256 starts with {actual[:6]}, but the published {path.name} "
                    f"starts with {prefix}; the download is corrupt or another file was renamed: "
                    f"download it again from {spec.download_url}"
                )
            return


def _is_path(value) -> bool:
    return isinstance(value, str | os.PathLike)


# torch.save writes a zip archive (torch >= 1.6) or, in the legacy format, a protocol-2 pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02")
_OTHER_FORMATS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"\x80": "a Python pickle not written by torch.save",
}


def _describe(head: bytes) -> str:
    """What the first bytes of a file that is not a torch checkpoint look like."""
    for magic, what in _OTHER_FORMATS.items():
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "a text file" if "\x00" not in text else "unrecognised binary data"


def _needs_code(exc: Exception) -> bool:
    """True when torch's weights-only unpickler refused a global (a class or function the
    pickle would call), as opposed to failing on bytes it cannot parse at all. A refused
    ``torch.*`` name is torch's own (allowed) rebuild function cut short: a damaged file."""
    if not isinstance(exc, pickle.UnpicklingError):
        return False
    text = str(exc)
    found = re.search(
        r"GLOBAL (\S+) was not an allowed global|Unsupported global: GLOBAL (\S+)", text
    )
    return found is not None and not (found.group(1) or found.group(2)).startswith("torch.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file as a flat ``{name: tensor}`` dict, refusing anything else."""
    if path.is_dir():
        raise SuiteError(
            f"{path}: is a directory, not a checkpoint file; give the .pth file itself"
        )
    if not path.is_file():
        raise SuiteError(
            f"{path}: checkpoint not found; download the official SAM checkpoint there or "
            "point sam.checkpoints / $SPT_SAM_CHECKPOINT_DIR at it"
        )
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise SuiteError(
            f"{path}: cannot read the checkpoint ({exc.strerror}); check its permissions"
        ) from None
    if not head:
        raise SuiteError(f"{path}: empty checkpoint file (0 bytes); download it again")
    if not head.startswith(_TORCH_MAGIC):
        raise SuiteError(
            f"{path}: not a PyTorch checkpoint (it looks like {_describe(head)}); expected an "
            "official SAM .pth state_dict"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # every unpickling failure (IndexError, KeyError...) is bad input
        if _needs_code(exc):
            raise SuiteError(
                f"{path}: refused: the file holds pickled Python objects that could run code "
                "when loaded; a SAM checkpoint is a plain state_dict of tensors: use the "
                "official file"
            ) from None
        raise SuiteError(
            f"{path}: unreadable PyTorch checkpoint, probably truncated or corrupt "
            f"({type(exc).__name__}: {_load_error(exc)}); download it again"
        ) from None
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping) and _PATCH_KEY not in obj:
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise SuiteError(
            f"{path}: holds a {type(obj).__name__}, not a state_dict of named tensors; expected "
            "an official SAM checkpoint"
        )
    return dict(obj)


def detect_backbone(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the backbone whose encoder width and depth match, or None."""
    if _PATCH_KEY not in state_dict:
        return None
    width = state_dict[_PATCH_KEY].shape[0]
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("image_encoder.blocks.")})
    for spec in BACKBONES.values():
        if spec.encoder_dim == width and spec.encoder_depth == depth:
            return spec.name
    return None


def load_sam(
    backbone: str,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> Sam:
    """Build ``backbone`` and load ``checkpoint`` into it (random init when None), in eval mode."""
    spec = get_spec(backbone)
    if checkpoint is None:
        return build_sam(backbone, seed=seed).to(device)
    path = Path(checkpoint)
    if path.is_file():
        verify_published_hash(path)
    state_dict = read_state_dict(path)
    found = detect_backbone(state_dict)
    if found is None:
        raise SuiteError(
            f"{path}: no SAM image encoder in this file (no {_PATCH_KEY}); expected an official "
            f"SAM {backbone} checkpoint"
        )
    if found != backbone:
        raise SuiteError(
            f"{path}: holds a {found} checkpoint, but backbone {backbone} was asked for; "
            f"set the backbone to {found} or give the {spec.published_file or backbone} file"
        )
    sam = build_sam(backbone, seed=seed)
    try:
        result = sam.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise SuiteError(
            f"{path}: tensor shapes do not fit SAM {backbone} ({_first_line(exc)}); expected an "
            "official SAM checkpoint"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise SuiteError(
            f"{path}: keys do not fit SAM {backbone} (missing {_few(result.missing_keys)}, "
            f"unexpected {_few(result.unexpected_keys)}); expected an official SAM checkpoint"
        )
    return sam.to(device).eval()


def _load_error(exc: BaseException) -> str:
    """The useful line of a torch.load error: the weights-only unpickler's own reason, not its
    paragraph of advice (which suggests loading the file with code execution)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    text = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].split(". ")[0][:160] if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def _few(keys: list[str], n: int = 3) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
