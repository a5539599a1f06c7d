"""SPT model: LoRA-tuned SAM with a draft decoder, a final decoder and relation adapters."""

from spt.model.spt_model import (
    SPTConfig,
    SPTModel,
    SPTOutput,
    build_spt,
    trainable_parameter_count_of,
)

__all__ = ["SPTConfig", "SPTModel", "SPTOutput", "build_spt", "trainable_parameter_count_of"]
