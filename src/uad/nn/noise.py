"""Training-time feature noise: the model learns to reconstruct the clean features from perturbed ones."""

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
