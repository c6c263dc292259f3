"""Feature aligners: bring the multi-level encoder features onto one grid and concatenate them.

Two different operators are in use and they are not interchangeable: UniAD point-samples every level
bilinearly (align_corners=True), DualAD averages each level down to stride 16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def align_bilinear(features: Sequence[Tensor], size: int | tuple[int, int]) -> Tensor:
    """UniAD's MFCN neck: resample each (B, C_l, H_l, W_l) to `size` (bilinear, AC=True), concatenate.

    Equivalent to the official `UpsamplingBilinear2d(scale_factor=stride_l / 16)`: point sampling,
    no anti-aliasing. Returns (B, sum C_l, *size).
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    return torch.cat(
        [
            f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=True)
            for f in features
        ],
        dim=1,
    )


def align_avgpool(features: Sequence[Tensor], strides: Sequence[int], target_stride: int = 16) -> Tensor:
    """DualAD's MFAA neck: nearest-upsample every level to the finest stride s_a = min(strides, target),
    concatenate, then average-pool with kernel = stride = target / s_a. Returns (B, sum C_l, H/16, W/16).

    For levels finer than the target this is a plain average over each target cell; for levels at the
    target stride it is the identity.
    """
    strides = list(strides)
    s_a = min(strides)
    if s_a > target_stride:
        raise ValueError(f"align_avgpool needs a level at stride <= {target_stride}; got strides {strides}")
    size = features[strides.index(s_a)].shape[-2:]
    ups = [f if s == s_a else F.interpolate(f, size=size, mode="nearest") for f, s in zip(features, strides)]
    k = target_stride // s_a
    return F.avg_pool2d(torch.cat(ups, dim=1), kernel_size=k, stride=k)
