"""Per-level cosine loss and maps (RD4AD), against the definition written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uad.nn.level_cosine import flat_cosine_loss, level_cosine_maps


def _levels(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, s, s, generator=g) for c, s in ((8, 8), (16, 4))]


def test_the_loss_is_the_sum_over_levels_of_one_minus_the_cosine_of_whole_flattened_maps():
    targets, preds = _levels(0), _levels(1)
    expected = 0.0
    for t, p in zip(targets, preds):
        for b in range(2):
            u, v = t[b].flatten(), p[b].flatten()
            expected += (1 - u @ v / (u.norm() * v.norm())).item() / 2
    assert flat_cosine_loss(targets, preds).item() == pytest.approx(expected, rel=1e-6)


def test_the_maps_are_per_position_one_minus_cosine_upsampled_with_aligned_corners():
    targets, preds = _levels(0), _levels(1)
    maps = level_cosine_maps(targets, preds, (16, 16))
    assert maps.shape == (2, 2, 16, 16)
    t, p = targets[1], preds[1]
    raw = 1 - (t * p).sum(1) / (t.norm(dim=1) * p.norm(dim=1))  # (2, 4, 4)
    up = F.interpolate(raw[:, None], size=(16, 16), mode="bilinear", align_corners=True)[:, 0]
    torch.testing.assert_close(maps[:, 1], up)
    assert maps[:, 0, 0, 0].tolist() == pytest.approx(
        (1 - F.cosine_similarity(targets[0], preds[0]))[:, 0, 0].tolist()
    )


def test_levels_that_do_not_pair_up_are_refused():
    with pytest.raises(ValueError, match="do not pair up"):
        flat_cosine_loss(_levels(0), _levels(1)[:1])
