"""Grouping taps and decoder blocks (uad.nn.token_groups) on small hand-made examples."""

from __future__ import annotations

import pytest
import torch

from uad.errors import ConfigError
from uad.nn.token_groups import default_heads, fuse, halves, stage_slices, take_channels, tap_groups


def test_halves_and_heads_are_the_official_choices():
    assert halves(8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [default_heads(d) for d in (384, 768, 1024)] == [6, 12, 16]
    assert default_heads(176) == 2  # 176 / 64 -> 2, which divides 176


def test_fuse_is_the_mean_of_the_chosen_members():
    parts = [torch.full((1, 2), float(i)) for i in range(4)]
    assert torch.equal(fuse(parts, [1, 3]), torch.full((1, 2), 2.0))


def test_stage_slices_take_each_groups_stages_from_the_concatenation():
    ranges = stage_slices([2, 3, 4], [[0, 2], [1]])
    assert ranges == [[(0, 2), (5, 9)], [(2, 5)]]
    features = torch.arange(9.0).view(1, 9, 1, 1)
    assert take_channels(features, ranges[0]).flatten().tolist() == [0, 1, 5, 6, 7, 8]


def test_tap_groups_default_to_the_halves_and_refuse_groups_that_do_not_pair_or_exist():
    assert tap_groups(None, [[0, 1], [2, 3]], taps=8, blocks=4) == (
        [[0, 1, 2, 3], [4, 5, 6, 7]],
        [[0, 1], [2, 3]],
    )
    with pytest.raises(ConfigError, match="same number of groups"):
        tap_groups([[0, 1]], [[0], [1]], taps=2, blocks=2)
    with pytest.raises(ConfigError, match=r"encoder_groups .* indices < 4"):
        tap_groups([[0, 4]], [[0]], taps=4, blocks=1)
    with pytest.raises(ConfigError, match="decoder_groups"):
        tap_groups([[0]], [[]], taps=4, blocks=1)
