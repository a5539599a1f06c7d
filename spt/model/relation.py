"""The visual relation of SPT's Visual-Relation-Aware adapter (VRA), computed once per image.

From the image-encoder tokens T (B, N, C) (the embedding grid flattened row-major, no positional
encoding) the relation S (B, N, N) says how much each token resembles every other token:

    T^ = T / (||T|| + 1e-16)          per token, L2 over channels
    A  = T^ @ T^.T                    cosine similarity
    A_ii = -1e16                      a token never relates to itself
    S  = softmax(A, last axis)        each row sums to 1

Optional threshold ``alpha`` (official ``vatt_alpha``; 0 = off): keep only S_ij > alpha / N, then
divide every entry by the sum over axis -2 (column sums; a zero sum counts as 1). The official code
normalises the columns here, not the rows, so the thresholded relation's columns sum to 1 and its
rows do not; checkpoints were trained with that, so it is kept.
"""

from __future__ import annotations

import torch
from torch import Tensor

NORM_EPS = 1e-16
SELF_SIMILARITY = -1e16


def tokens_of(embedding: Tensor) -> Tensor:
    """Image embedding (B, C, h, w) -> tokens (B, h*w, C), row-major, as a (non-contiguous) view."""
    return embedding.flatten(2).permute(0, 2, 1)


def visual_relation(tokens: Tensor, threshold: float = 0.0) -> Tensor:
    """Relation S (B, N, N) of tokens (B, N, C); ``threshold`` is the official alpha (0 = off)."""
    n = tokens.shape[-2]
    unit = tokens / (tokens.norm(dim=-1, keepdim=True) + NORM_EPS)
    similarity = unit @ unit.transpose(-2, -1)
    # In place on the diagonal view: no (N, N) mask to build (N = 4096 at 1024 px). Autograd
    # allows it, because the matmul's backward needs its inputs, not its output.
    # fp16 (autocast) cannot hold -1e16: its most negative value does the same (exp gives 0)
    lowest = max(SELF_SIMILARITY, torch.finfo(similarity.dtype).min)
    similarity.diagonal(dim1=-2, dim2=-1).fill_(lowest)
    relation = similarity.softmax(dim=-1)
    if threshold != 0:
        relation = torch.where(relation > threshold / n, relation, torch.zeros_like(relation))
        column_sums = relation.sum(dim=-2, keepdim=True)
        column_sums = torch.where(column_sums == 0, torch.ones_like(column_sums), column_sums)
        relation = relation / column_sums
    return relation
