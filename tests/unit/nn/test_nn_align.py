"""`align_avgpool` pools each level directly; the reference is the MFAA definition written out (nearest
upsampling of every level to the finest grid, concatenation, k x k average pooling)."""

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
