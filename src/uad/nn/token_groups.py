"""Grouping the taps of a ViT encoder and the blocks of a ViT decoder (Dinomaly, INP-Former): each group is
the mean of its members, and the encoder and decoder groups are compared pair by pair."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def halves(count: int) -> list[list[int]]:
    """[[0 .. count//2 - 1], [count//2 .. count - 1]]: the official grouping for 8 taps."""
    return [list(range(count // 2)), list(range(count // 2, count))]


def default_heads(width: int, head_dim: int = 64) -> int:
    """The largest head count <= width / 64 that divides the width (6 / 12 / 16 for ViT-S / B / L)."""
    heads = max(1, width // head_dim)
    while width % heads:
        heads -= 1
    return heads


def fuse(features: Sequence[Tensor], indices: Sequence[int]) -> Tensor:
    """Mean of the selected features (official `fuse_feature`)."""
    return torch.stack([features[i] for i in indices], dim=1).mean(dim=1)
