"""Reconstruction error per backbone level, for features that were aligned and concatenated by channel.

DualAD treats the levels as equals: the loss is the sum of each level's own mean squared error (a level
with few channels weighs as much as a wide one), and the anomaly map is the product of each level's
root-mean-square error, so a position is anomalous only where every level agrees (official
cyhaan/DualAD: `utils/criterion_helper.py` `FeatureMSELoss` with return_type "sum";
`models/reconstructions/dualad.py` `DualAD.cal_anomaly_score`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _split(rec: Tensor, target: Tensor, channels: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
    if rec.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(rec.shape)} and target {tuple(target.shape)} differ")
    if sum(channels) != target.shape[1]:
        raise ValueError(f"level channels {list(channels)} do not add up to {target.shape[1]}")
    return list(zip(rec.split(list(channels), dim=1), target.split(list(channels), dim=1)))


def level_mse_sum(rec: Tensor, target: Tensor, channels: Sequence[int]) -> Tensor:
    """Sum over levels of MSE(rec_l, target_l), each averaged over its own elements. (B, C, ...) -> ()."""
    return sum(F.mse_loss(r, t) for r, t in _split(rec, target, channels))


def level_rms_product(rec: Tensor, target: Tensor, channels: Sequence[int]) -> Tensor:
    """Product over levels of sqrt(mean_c (rec_l - target_l)^2). (B, C, H, W) -> (B, 1, H, W)."""
    maps = [(r - t).pow(2).mean(dim=1, keepdim=True).sqrt() for r, t in _split(rec, target, channels)]
    return torch.cat(maps, dim=1).prod(dim=1, keepdim=True)
