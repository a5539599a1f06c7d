"""SAM backbone layer: build a backbone by name and load official checkpoints safely."""

from spt.sam.backbones import BACKBONES, BackboneSpec, build_sam, get_spec, resolve_device
from spt.sam.checkpoint import CheckpointChoice, choose_checkpoint, load_sam

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "CheckpointChoice",
    "build_sam",
    "choose_checkpoint",
    "get_spec",
    "load_sam",
    "resolve_device",
]
