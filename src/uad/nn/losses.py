"""Reconstruction losses shared by the methods (Dinomaly's hard mining, INP-Former's soft mining).

Dinomaly's "loose reconstruction" (official `global_cosine_hm_percent` in `utils.py`): per feature group,
one cosine distance per image between the whole encoder and decoder feature maps (a global constraint
that leaves single points free to deviate), while hard mining shrinks the gradient of the points that
are already well reconstructed, so training concentrates on the hard ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(weight)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (weight,) = ctx.saved_tensors
        return grad * weight, None


def scale_gradient(x: Tensor, weight: Tensor) -> Tensor:
    """Exactly the identity in the forward pass; multiplies the gradient reaching `x` by `weight`
    (broadcast), as the official gradient hook does."""
    return _ScaleGradient.apply(x, weight)


def hard_mining_ratio(step: int, final: float = 0.9, warmup_steps: int = 1000) -> float:
    """Share of the points whose gradient is down-weighted at `step`: a linear ramp 0 -> final
    (official: p = min(0.9 * it / 1000, 0.9), `it` counted from 0)."""
    if warmup_steps <= 0:
        return final
    return min(final * step / warmup_steps, final)


def global_cosine_mined(
    encoder_feats: Sequence[Tensor], decoder_feats: Sequence[Tensor], point_weight: Callable[[Tensor], Tensor]
) -> Tensor:
    """Mean over groups of mean_i [1 - cos(vec(en_i), vec(de_i))], the gradient of each decoder point
    multiplied by `point_weight(distance)`, distance = 1 - cos over channels at every point (B, 1, h, w).

    encoder_feats, decoder_feats: per group (B, C, h, w); the encoder side is a fixed target (detached). The
    loss value is not re-weighted: the weights only steer the gradient (the mining).
    """
    total = 0.0
    for en, de in zip(encoder_feats, decoder_feats, strict=True):
        en = en.detach().float()
        de = de.float()
        with torch.no_grad():
            distance = 1 - F.cosine_similarity(en, de, dim=1).unsqueeze(1)  # (B, 1, h, w)
            weight = point_weight(distance).to(de.dtype)  # (B, 1, h, w)
        de = scale_gradient(de, weight)
        total = total + (1 - F.cosine_similarity(en.flatten(1), de.flatten(1), dim=1)).mean()
    return total / len(encoder_feats)


def global_cosine_hm(
    encoder_feats: Sequence[Tensor], decoder_feats: Sequence[Tensor], ratio: float, factor: float = 0.1
) -> Tensor:
    """Dinomaly's hard mining (`global_cosine_mined`): the points whose distance is below the k-th largest
    distance of the whole batch, k = int(B * h * w * (1 - ratio)), pass `factor` times their gradient to the
    decoder features. ratio 0 down-weights nothing.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"hard-mining ratio must be in [0, 1); got {ratio}")

    def hard(distance: Tensor) -> Tensor:
        k = max(1, int(distance.numel() * (1 - ratio)))
        threshold = torch.topk(distance.flatten(), k).values[-1]
        return torch.where(distance < threshold, factor, 1.0)

    return global_cosine_mined(encoder_feats, decoder_feats, hard)


def global_cosine_soft_mining(
    encoder_feats: Sequence[Tensor], decoder_feats: Sequence[Tensor], power: float = 3.0
) -> Tensor:
    """INP-Former's soft mining (official `global_cosine_hm_adaptive`; `global_cosine_mined`): the gradient
    of each point is re-weighted smoothly instead of by a hard threshold, by (d_p / mean(d)) ** power, the
    mean over the whole batch: points harder than average get more than their share, easy points almost
    nothing, with no ratio to schedule.
    """
    return global_cosine_mined(encoder_feats, decoder_feats, lambda d: (d / d.mean()) ** power)
