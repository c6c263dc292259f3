"""DualAD: its own blocks (memory, pseudo-anomaly noise, per-level loss and map, MFAA aligner)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from uad.nn.align import align_avgpool
from uad.nn.level_error import level_mse_sum, level_rms_product
from uad.nn.memory import MemoryModule
from uad.nn.noise import SpatialNoise

# --- memory module -----------------------------------------------------------------------------------


def _memory(rows: list[list[float]], threshold: float | None) -> MemoryModule:
    memory = MemoryModule(len(rows), len(rows[0]), shrink_threshold=threshold)
    with torch.no_grad():
        memory.weight.copy_(torch.tensor(rows))
    return memory


def test_memory_hard_shrinkage_keeps_the_slots_above_the_threshold_and_renormalises():
    # slots e1, e2, -e1 and the query e1: cosines (1, 0, -1), softmax (e, 1, 1/e) / (e + 1 + 1/e)
    memory = _memory([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], threshold=0.1)
    z = math.e + 1 + 1 / math.e
    soft = torch.tensor([math.e / z, 1 / z, 1 / (math.e * z)])  # 0.665, 0.245, 0.090
    assert soft[2] < 0.1 < soft[1]
    kept = torch.tensor([soft[0], soft[1], 0.0]) / (soft[0] + soft[1])
    weights, read = memory(torch.tensor([[3.0, 0.0]]))  # cosine addressing: the norm of x does not matter
    torch.testing.assert_close(weights[0], kept)
    torch.testing.assert_close(read[0], torch.tensor([kept[0], kept[1]]))


def test_memory_default_threshold_is_one_over_the_slots_and_there_is_no_residual():
    memory = _memory([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], threshold=None)
    assert memory.shrink_threshold == pytest.approx(1 / 3)
    weights, read = memory(torch.tensor([[1.0, 0.0]]))  # only the first slot is above 1/3: read = e1
    torch.testing.assert_close(weights[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(read[0], torch.tensor([1.0, 0.0]))


def test_memory_init_unit_rows_and_addressing_weights_sum_to_one():
    torch.manual_seed(0)
    memory = MemoryModule(196, 256)
    torch.testing.assert_close(memory.weight.norm(dim=-1), torch.ones(196))
    weights, read = memory(torch.randn(2, 10, 256))
    assert weights.shape == (2, 10, 196) and read.shape == (2, 10, 256)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 10))
    kept = weights > 0
    assert kept.any(-1).all() and not kept.all()  # shrinkage drops slots but never all of them
    torch.testing.assert_close(read, weights @ memory.weight)


# --- pseudo-anomaly noise ----------------------------------------------------------------------------


def test_spatial_noise_in_training_only_scaled_by_each_channels_spread():
    torch.manual_seed(0)
    noise = SpatialNoise(scale=3.2)
    spread = torch.tensor([0.0, 0.5, 2.0, 8.0])  # per channel; channel 0 is constant over the tokens
    tokens = torch.randn(3, 4096, 4) * spread + 1.0  # (B, N, C)
    noisy = noise.train()(tokens)
    std = tokens.var(dim=1, keepdim=True).sqrt()  # (B, 1, C), per image and channel
    eps = (noisy - tokens)[..., 1:] / (std[..., 1:] * 3.2)
    assert torch.equal(noisy[..., 0], tokens[..., 0])  # no spread, no noise
    assert abs(eps.std().item() - 1.0) < 0.02 and abs(eps.mean().item()) < 0.02
    assert torch.equal(noise.eval()(tokens), tokens)


# --- per-level loss and map --------------------------------------------------------------------------


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


# --- MFAA aligner ------------------------------------------------------------------------------------


def test_aligner_equals_the_official_upsample_then_pool_and_a_per_level_average():
    """Official `models/necks/mfaa.py` `MFAA`: nearest `nn.Upsample(scale_factor=stride / s_a)` of every level
    to the first tap's stride s_a, concatenation, `AvgPool2d(16 / s_a)`; restated here with torch ops."""
    torch.manual_seed(0)
    strides = [2, 4, 8, 16]  # EfficientNet taps of a 112 px image (s_a = 2, pool 8)
    features = [torch.randn(2, c, 112 // s, 112 // s) for c, s in zip([3, 4, 5, 6], strides)]
    official = F.avg_pool2d(
        torch.cat([torch.nn.Upsample(scale_factor=s / 2)(f) for f, s in zip(features, strides)], 1), 8, 8
    )
    per_level = torch.cat([F.avg_pool2d(f, 16 // s, 16 // s) for f, s in zip(features, strides)], 1)
    aligned = align_avgpool(features, strides)
    assert aligned.shape == (2, 18, 7, 7)
    torch.testing.assert_close(aligned, official)
    torch.testing.assert_close(aligned, per_level)
