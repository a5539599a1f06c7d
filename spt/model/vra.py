"""Injecting the visual relation into segment_anything's two-way transformer (SPT's VRA).

In every selected ``TwoWayAttentionBlock`` the image tokens (the block's ``keys``) are refined
right after the image-to-token attention and its LayerNorm ``norm4``:

    keys <- keys + (S @ keys) * gamma,    keys (P, N, C), S (1, N, N), gamma (C,)

with one trainable ``gamma`` per block per decoder (zero at init, so the decoder starts as SAM's).
The final token-to-image attention after the blocks gets no relation.

How: a forward hook on ``norm4``. ``norm4`` is the last operation of the block, so its output is
exactly where the official code adds the relation, and segment_anything's forward runs unchanged;
no SAM code is copied, and the decoder's state-dict names stay SAM's plus one
``layers.N.relation_adapter.gamma`` per block. The relation is per image, so it is handed to the
adapters for the duration of one decoder call with :func:`relation_in_use`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from segment_anything.modeling import MaskDecoder
from torch import Tensor, nn


class RelationAdapter(nn.Module):
    """``keys + (S @ keys) * gamma`` for keys (P, N, C) and the relation S (1 or P, N, N)."""

    def __init__(self, dim: int, gamma_init: float = 0.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(gamma_init)))
        self.relation: Tensor | None = None  # set per call by relation_in_use, never saved

    def forward(self, keys: Tensor) -> Tensor:
        if self.relation is None:
            raise RuntimeError(
                "an SPT decoder was called without a relation; call it inside relation_in_use()"
            )
        return keys + (self.relation @ keys) * self.gamma

    def after_norm4(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        """Forward hook on ``norm4``: returning a tensor replaces the norm's output.

        A bound method rather than a closure, so ``copy.deepcopy`` of a model re-binds the hook
        to the copied adapter instead of the original one.
        """
        return self(output)


def add_relation_adapters(
    decoder: MaskDecoder, blocks: Iterable[int] | None = None, gamma_init: float = 0.0
) -> list[RelationAdapter]:
    """Attach a :class:`RelationAdapter` to the selected two-way blocks (in place).

    ``blocks``: indices into ``decoder.transformer.layers``; None means every block (the official
    ``vatt_pos = -1``).
    """
    layers = decoder.transformer.layers
    chosen = range(len(layers)) if blocks is None else sorted(set(blocks))
    adapters = []
    for index in chosen:
        if not 0 <= index < len(layers):
            raise ValueError(
                f"relation block {index} out of range 0..{len(layers) - 1}; "
                "pass None (not -1) for every block"
            )
        block = layers[index]
        if hasattr(block, "relation_adapter"):
            raise ValueError(f"two-way block {index} already has a relation adapter")
        block.relation_adapter = RelationAdapter(decoder.transformer.embedding_dim, gamma_init)
        block.norm4.register_forward_hook(block.relation_adapter.after_norm4)
        adapters.append(block.relation_adapter)
    return adapters


def relation_adapters(decoder: nn.Module) -> list[RelationAdapter]:
    return [m for m in decoder.modules() if isinstance(m, RelationAdapter)]


@contextmanager
def relation_in_use(decoder: nn.Module, relation: Tensor) -> Iterator[None]:
    """Give ``relation`` (1, N, N) to every adapter of ``decoder`` for the body of the block."""
    adapters = relation_adapters(decoder)
    for adapter in adapters:
        adapter.relation = relation
    try:
        yield
    finally:
        # Clear it so a later call can never run on a stale image's relation.
        for adapter in adapters:
            adapter.relation = None
