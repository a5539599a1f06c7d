"""Activation checkpointing of SAM's image-encoder blocks during training, exact in float32.

Why: training keeps every encoder block's intermediate activations (attention maps, the 4x-wide
MLP hidden layer, window partitions) alive until the backward pass; at vit_b's 64 x 64 token grid
that is most of a training step's memory. A checkpointed block keeps only its input and
recomputes its internals during the backward pass: less peak memory for about one extra encoder
forward of compute.

Exact: the gradients are bit for bit the ones without checkpointing. SAM's blocks draw no
randomness (no dropout, no drop-path), so the recomputation repeats the same arithmetic in the
same order on the same inputs and gives the same bits (with the fixed thread count of
spt/numerics.py). Randomness added inside a block (LoRA dropout) stays exact too: torch's
checkpoint restores the RNG state before recomputing (``preserve_rng_state``, on by default).

:func:`checkpoint_encoder_blocks` switches a built model's segment_anything ``Block`` modules to
:class:`CheckpointedBlock` in place, as :mod:`spt.sam.portable` does for ``LayerNorm2d``:
parameters, hooks and state-dict keys stay, and segment_anything's code is not copied. Only the
``Block`` class is swapped; its children may be wrapped or swapped by others (the adapter and
LoRA baselines, SPT's LoRA, exact kernels): the parent's forward runs them, whatever they are.
Evaluation and ``torch.no_grad`` run the plain forward: nothing to save, nothing recomputed.
Forward hooks on a block's children run again during the recomputation.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from segment_anything.modeling.image_encoder import Block
from torch import nn


class CheckpointedBlock(Block):
    """segment_anything's encoder ``Block`` whose training forward is activation-checkpointed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            # Non-reentrant: parameters get gradients even when ``x`` needs none (a frozen
            # patch embedding feeds the first block), and it nests under autograd as usual.
            return torch.utils.checkpoint.checkpoint(super().forward, x, use_reentrant=False)
        return super().forward(x)


def checkpoint_encoder_blocks(model: nn.Module, enabled: bool = True) -> int:
    """Switch every encoder ``Block`` in ``model`` to :class:`CheckpointedBlock` (in place), or
    back with ``enabled=False``; returns how many modules were switched.

    Exact types only: a subclass of ``Block`` someone else defines is left alone, since its
    forward is not the one :class:`CheckpointedBlock` inherits.
    """
    source, target = (Block, CheckpointedBlock) if enabled else (CheckpointedBlock, Block)
    switched = 0
    for module in model.modules():
        if type(module) is source:
            module.__class__ = target
            switched += 1
    return switched
