"""Grouping the taps of a ViT encoder and the blocks of a ViT decoder (Dinomaly, INP-Former): each group is
the mean of its members, and the encoder and decoder groups are compared pair by pair."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from uad.errors import ConfigError


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


def stage_slices(channels: Sequence[int], groups: Sequence[Sequence[int]]) -> list[list[tuple[int, int]]]:
    """Per group, the (start, end) channel ranges of its stages in the concatenation of all stages (a CNN's
    stages side by side on one grid: the token of a CNN variant)."""
    bounds = [0, *torch.tensor(list(channels)).cumsum(0).tolist()]
    return [[(bounds[i], bounds[i + 1]) for i in group] for group in groups]


def take_channels(features: Tensor, ranges: Sequence[tuple[int, int]]) -> Tensor:
    """The channels of `ranges` of (B, C, ...) features, concatenated in order."""
    return torch.cat([features[:, a:b] for a, b in ranges], dim=1)


def tap_groups(
    encoder_groups: Sequence[Sequence[int]] | None,
    decoder_groups: Sequence[Sequence[int]],
    taps: int,
    blocks: int,
) -> tuple[list[list[int]], list[list[int]]]:
    """The encoder's groups of taps (None: the two halves) and the decoder's groups of blocks, as lists; one
    clear error for groups that do not pair up or that name a tap / block that does not exist."""
    encoder_groups = [list(g) for g in (encoder_groups or halves(taps))]
    decoder_groups = [list(g) for g in decoder_groups]
    if len(encoder_groups) != len(decoder_groups):
        raise ConfigError(
            f"method.model.encoder_groups ({encoder_groups}) and decoder_groups ({decoder_groups}) must have "
            "the same number of groups"
        )
    for name, groups, limit in (
        ("encoder_groups", encoder_groups, taps),
        ("decoder_groups", decoder_groups, blocks),
    ):
        if not all(groups) or any(not 0 <= i < limit for g in groups for i in g):
            raise ConfigError(f"method.model.{name} {groups} must be non-empty lists of indices < {limit}")
    return encoder_groups, decoder_groups
