"""uad.nn.align: the feature aligners."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uad.nn.align import align_avgpool


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
