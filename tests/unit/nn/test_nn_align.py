"""uad.nn.align: `align_avgpool` pools each level directly; the references are the MFAA definition written
out (nearest upsampling of every level to the finest grid, concatenation, k x k average pooling) and the
official module restated with torch ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uad.nn.align import align_avgpool


def mfaa_by_definition(features, strides, target):
    finest = features[strides.index(min(strides))].shape[-2:]
    up = torch.cat([F.interpolate(f, size=finest, mode="nearest") for f in features], dim=1)
    k = target // min(strides)
    return F.avg_pool2d(up, kernel_size=k, stride=k)


@pytest.mark.parametrize(
    ("size", "strides"),
    [
        (224, [4, 8, 16]),  # WRes50 layers 1-3: pooled 4x4, 2x2, kept
        (224, [4, 8, 16, 32]),  # a level coarser than the target: replicated
        (230, [4, 8, 16]),  # grids that do not divide evenly: the two steps as written
        (64, [8, 32]),
    ],
)
def test_direct_pooling_equals_the_definition(size, strides):
    torch.manual_seed(0)
    features = [torch.randn(2, 3, size // s, size // s) for s in strides]
    expected = mfaa_by_definition(features, strides, 16)
    got = align_avgpool(features, strides)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)  # float rounding of the sums only


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
