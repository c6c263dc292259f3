"""Reconstruction losses shared by the methods (Dinomaly's hard mining, INP-Former's soft mining).

Dinomaly's "loose reconstruction" (official `global_cosine_hm_percent` in `utils.py`): per feature group,
one cosine distance per image between the whole encoder and decoder feature maps (a global constraint
that leaves single points free to deviate), while hard mining shrinks the gradient of the points that
are already well reconstructed, so training concentrates on the hard ones.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def global_cosine_hm(
    encoder_feats: Sequence[Tensor], decoder_feats: Sequence[Tensor], ratio: float, factor: float = 0.1
) -> Tensor:
    """Mean over groups of mean_i [1 - cos(vec(en_i), vec(de_i))], with hard mining on the gradient.

    encoder_feats, decoder_feats: per group (B, C, h, w); the encoder side is a fixed target (detached).
    The points whose distance 1 - cos over channels is below the k-th largest distance of the whole batch,
    k = int(B * h * w * (1 - ratio)), pass `factor` times their gradient to the decoder features; the loss
    value is not re-weighted. ratio 0 down-weights nothing.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"hard-mining ratio must be in [0, 1); got {ratio}")
    total = 0.0
    for en, de in zip(encoder_feats, decoder_feats, strict=True):
        en = en.detach().float()
        de = de.float()
        with torch.no_grad():
            distance = 1 - F.cosine_similarity(en, de, dim=1).unsqueeze(1)  # (B, 1, h, w)
            k = max(1, int(distance.numel() * (1 - ratio)))
            threshold = torch.topk(distance.flatten(), k).values[-1]
            weight = torch.where(distance < threshold, factor, 1.0).to(de.dtype)  # (B, 1, h, w)
        de = scale_gradient(de, weight)
        total = total + (1 - F.cosine_similarity(en.flatten(1), de.flatten(1), dim=1)).mean()
    return total / len(encoder_feats)


def global_cosine_soft_mining(
    encoder_feats: Sequence[Tensor], decoder_feats: Sequence[Tensor], power: float = 3.0
) -> Tensor:
    """INP-Former's soft-mining loss (official `global_cosine_hm_adaptive`): the loss value of
    `global_cosine_hm`, but every point's gradient is re-weighted smoothly instead of by a hard threshold.

    Per group, d_p = 1 - cos over channels at each point p (B, 1, h, w); the gradient reaching the decoder
    features at p is multiplied by (d_p / mean(d)) ** power, the mean over the whole batch: points harder
    than average get more than their share, easy points almost nothing, with no ratio to schedule.
    """
    total = 0.0
    for en, de in zip(encoder_feats, decoder_feats, strict=True):
        en = en.detach().float()
        de = de.float()
        with torch.no_grad():
            distance = 1 - F.cosine_similarity(en, de, dim=1).unsqueeze(1)  # (B, 1, h, w)
            weight = (distance / distance.mean()) ** power
        de = scale_gradient(de, weight.to(de.dtype))
        total = total + (1 - F.cosine_similarity(en.flatten(1), de.flatten(1), dim=1)).mean()
    return total / len(encoder_feats)
