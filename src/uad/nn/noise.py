"""Training-time feature noise that turns normal features into pseudo-anomalies; the model learns to
reconstruct the clean features from the perturbed ones. Active in training mode only: at test time the
modules are the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def feature_jitter(tokens: Tensor, scale: float) -> Tensor:
    """UniAD's jitter: f + eps * (||f||_2 / C) * scale per token, eps ~ N(0, I_C); tokens are (..., C).

    The norm is divided by C, not sqrt(C): at scale 20 and C = 272 the noise norm is about 1.2x the
    feature norm, as in the official code. Do not "fix" it.
    """
    norms = tokens.norm(dim=-1, keepdim=True) / tokens.shape[-1]  # (..., 1)
    return tokens + torch.randn_like(tokens) * norms * scale


class FeatureJitter(nn.Module):
    """`feature_jitter` in training (with probability `prob` per batch, as the official code); identity
    in eval."""

    def __init__(self, scale: float = 20.0, prob: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.prob = prob

    def forward(self, tokens: Tensor) -> Tensor:
        if not self.training or self.scale <= 0 or torch.rand(()).item() >= self.prob:
            return tokens
        return feature_jitter(tokens, self.scale)


def spatial_noise(tokens: Tensor, scale: float) -> Tensor:
    """DualAD's pseudo-anomalies ("spatial" jitter): x + eps * std * scale, eps ~ N(0, I); tokens (B, N, C).

    The std is taken per image and per channel over the N tokens (unbiased, as `x.var(dim=1).sqrt()` in
    the official `DualAD.to_anomaly`), so every channel is perturbed in proportion to its own spread
    across the image. The paper's scale is 3.2.
    """
    std = tokens.var(dim=1, keepdim=True).sqrt()  # (B, 1, C)
    return tokens + torch.randn_like(tokens) * std * scale


class SpatialNoise(nn.Module):
    """`spatial_noise` in training, always (the official config's `prob` is not used); identity in eval."""

    def __init__(self, scale: float = 3.2) -> None:
        super().__init__()
        if scale < 0:
            raise ValueError(f"SpatialNoise scale must be >= 0; got {scale}")
        self.scale = scale

    def forward(self, tokens: Tensor) -> Tensor:
        if not self.training or self.scale == 0:
            return tokens
        return spatial_noise(tokens, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
