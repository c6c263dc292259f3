"""Feature noise that turns normal training features into pseudo-anomalies; the target stays clean.

Active in training mode only: at test time the modules are the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SpatialNoise(nn.Module):
    """DualAD's pseudo-anomalies ("spatial" jitter): x + eps * std * scale, eps ~ N(0, I).

    The std is taken per image and per channel over the tokens (unbiased, as `x.var(dim=1).sqrt()` in the
    official `DualAD.to_anomaly`), so every channel is perturbed in proportion to its own spread across
    the image; the paper's scale is 3.2. Input and output (B, N, C) tokens.
    """

    def __init__(self, scale: float = 3.2) -> None:
        super().__init__()
        if scale < 0:
            raise ValueError(f"SpatialNoise scale must be >= 0; got {scale}")
        self.scale = scale

    def forward(self, tokens: Tensor) -> Tensor:
        if not self.training or self.scale == 0:
            return tokens
        std = tokens.var(dim=1, keepdim=True).sqrt()  # (B, 1, C)
        return tokens + torch.randn_like(tokens) * std * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
