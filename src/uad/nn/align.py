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

    The pooling acts per channel, so each level is pooled on its own, and directly where its grid divides
    evenly (`_pool_level`): a level at stride s averages (target / s)^2 cells instead of (target / s_a)^2
    replicated copies. For WRes50 at 224 this skips building the (B, 1792, 56, 56) concatenation.
    """
    strides = list(strides)
    s_a = min(strides)
    if s_a > target_stride:
        raise ValueError(f"align_avgpool needs a level at stride <= {target_stride}; got strides {strides}")
    size = tuple(features[strides.index(s_a)].shape[-2:])
    k = target_stride // s_a
    return torch.cat([_pool_level(f, s // s_a, k, size) for f, s in zip(features, strides)], dim=1)


def _pool_level(f: Tensor, r: int, k: int, size: tuple[int, int]) -> Tensor:
    """One level's part of `align_avgpool`: nearest-upsampled by r to `size`, then k x k average-pooled.
    When `size` is exactly r times the level's grid and r divides k (or k divides r), the same cells are
    averaged over (k / r)^2 values instead of k^2 copies of them (or replicated r / k times), the same
    mean up to float rounding; otherwise the two steps run as written."""
    h, w = f.shape[-2:]
    if (h * r, w * r) != size or (k % r and r % k):
        up = f if (h, w) == size else F.interpolate(f, size=size, mode="nearest")
        return F.avg_pool2d(up, kernel_size=k, stride=k)
    if r == k:
        return f
    if r < k:
        return F.avg_pool2d(f, kernel_size=k // r, stride=k // r)
    return F.interpolate(f, scale_factor=r // k, mode="nearest")
