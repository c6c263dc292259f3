"""uad.nn.level_error: the per-level loss (sum of each level's MSE) and map (product of each level's RMS)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uad.nn.level_error import level_mse_sum, level_rms_product


def test_loss_is_the_sum_of_each_levels_mse():
    target = torch.zeros(2, 4, 3, 3)
    rec = torch.cat([torch.full((2, 1, 3, 3), 2.0), torch.full((2, 3, 3, 3), 1.0)], dim=1)
    # level 1 (1 channel): MSE 4; level 2 (3 channels): MSE 1. A global MSE would give 7/4.
    assert level_mse_sum(rec, target, [1, 3]).item() == pytest.approx(5.0)
    assert F.mse_loss(rec, target).item() == pytest.approx(1.75)


def test_map_is_the_product_of_each_levels_rms_error():
    torch.manual_seed(0)
    target, rec = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    rms_1 = (rec[:, :2] - target[:, :2]).pow(2).mean(1, keepdim=True).sqrt()
    rms_2 = (rec[:, 2:] - target[:, 2:]).pow(2).mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(level_rms_product(rec, target, [2, 3]), rms_1 * rms_2)
    with pytest.raises(ValueError, match="do not add up"):
        level_rms_product(rec, target, [2, 2])
