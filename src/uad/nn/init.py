"""Weight initialisation shared by the reconstruction networks."""

from __future__ import annotations

from torch import nn


def xavier_linear_(module: nn.Module) -> None:
    """xavier_uniform on every Linear/Conv weight inside `module`, zero biases (UniAD's and DualAD's
    `initializer: xavier_uniform`); embeddings and norms keep their own init."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
