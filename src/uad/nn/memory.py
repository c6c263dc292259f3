"""Memory module with cosine addressing and hard shrinkage (DualAD's heterogeneous WSN).

Every token is replaced by a convex combination of a few learned prototypes: a normal token finds close
prototypes and is rebuilt well, an anomalous one is pulled towards normality. As the official code
(cyhaan/DualAD, `models/reconstructions/dualad.py`, class `MemoryModule`): the addressing weights are a
softmax over scaled cosine similarities, weights at or below `shrink_threshold` (default 1/slots) are set
to 0 (a hard threshold, not MemAE's smooth shrinkage), the rest are renormalised to sum 1, and there is
no residual: the read-out replaces the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MemoryModule(nn.Module):
    """`num_slots` prototypes of width `dim`, read by cosine attention with hard shrinkage.

    forward(x (..., dim)) -> (weights (..., num_slots), read-out (..., dim)).
    """

    def __init__(
        self,
        num_slots: int,
        dim: int,
        scale: float = 1.0,
        shrink_threshold: float | None = None,
        init_norm: float = 1.0,
    ) -> None:
        super().__init__()
        if num_slots < 1 or dim < 1:
            raise ValueError(f"MemoryModule needs num_slots >= 1 and dim >= 1; got {num_slots}, {dim}")
        self.num_slots = num_slots
        self.dim = dim
        self.scale = scale
        self.init_norm = init_norm
        self.shrink_threshold = 1.0 / num_slots if shrink_threshold is None else shrink_threshold
        self.weight = nn.Parameter(torch.empty(num_slots, dim))  # (M, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 1) rows rescaled to norm `init_norm` (the official init)."""
        with torch.no_grad():
            nn.init.normal_(self.weight)
            self.weight.mul_(self.init_norm / self.weight.norm(dim=-1, keepdim=True))

    def address(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., M) weights: softmax of scaled cosine, hard-shrunk, renormalised to sum 1."""
        similarity = F.linear(F.normalize(x, dim=-1) * self.scale, F.normalize(self.weight, dim=-1))
        weights = similarity.softmax(dim=-1)
        weights = torch.where(weights > self.shrink_threshold, weights, torch.zeros_like(weights))
        return F.normalize(weights, p=1, dim=-1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        weights = self.address(x)  # (..., M)
        return weights, weights @ self.weight  # (..., D)

    def extra_repr(self) -> str:
        return f"num_slots={self.num_slots}, dim={self.dim}, shrink_threshold={self.shrink_threshold:.4g}"
