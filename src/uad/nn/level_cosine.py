"""Cosine distance between encoder and decoder feature maps, level by level (RD4AD's loss and map).

The loss compares each level as one vector per image (all channels and positions flattened), a global
constraint; the map compares the channel vectors position by position (official hq-deng/RD4AD: `main.py`
`loss_fucntion`, `test.py` `cal_anomaly_map`; ADer `loss/base_loss.py` `CosLoss`, `util/metric.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(targets: Sequence[Tensor], preds: Sequence[Tensor]) -> None:
    if len(targets) != len(preds) or any(t.shape != p.shape for t, p in zip(targets, preds)):
        shapes = [tuple(t.shape) for t in targets], [tuple(p.shape) for p in preds]
        raise ValueError(f"levels do not pair up: targets {shapes[0]}, predictions {shapes[1]}")


def flat_cosine_loss(targets: Sequence[Tensor], preds: Sequence[Tensor]) -> Tensor:
    """Sum over levels of the batch mean of 1 - cos(flatten(target_b), flatten(pred_b)). -> ()."""
    _check(targets, preds)
    return sum(
        (1 - F.cosine_similarity(t.flatten(1), p.flatten(1), dim=1)).mean() for t, p in zip(targets, preds)
    )


def level_cosine_maps(targets: Sequence[Tensor], preds: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """Per level, 1 - cos over channels at every position, upsampled bilinearly (align_corners=True) to
    `size`. L x (B, C_l, H_l, W_l) -> (B, L, *size)."""
    _check(targets, preds)
    maps = [1 - F.cosine_similarity(t, p, dim=1)[:, None] for t, p in zip(targets, preds)]  # (B, 1, H_l, W_l)
    maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=True) for m in maps]
    return torch.cat(maps, dim=1)
