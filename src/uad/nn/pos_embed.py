"""2-D positional codes for a token grid, shape (h * w, D) row-major; added to attention queries and keys.

`learned` is what UniAD's MVTec config and DualAD use; `sine` is DETR's fixed code (UniAD's other option).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = (int(v) for v in value)
    return h, w


class LearnedPositionalEmbedding2d(nn.Module):
    """Row and column tables (h, D/2) and (w, D/2), U(0, 1) init; the code of (y, x) is [col[x], row[y]]."""

    def __init__(self, grid: int | Sequence[int], dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"positional embedding width must be even, got {dim}")
        self.grid = _pair(grid)
        self.row_embed = nn.Parameter(torch.rand(self.grid[0], dim // 2))
        self.col_embed = nn.Parameter(torch.rand(self.grid[1], dim // 2))

    def forward(self) -> Tensor:
        h, w = self.grid
        cols = self.col_embed[None].expand(h, -1, -1)  # (h, w, D/2)
        rows = self.row_embed[:, None].expand(-1, w, -1)  # (h, w, D/2)
        return torch.cat([cols, rows], dim=-1).flatten(0, 1)  # (h*w, D)


class SinePositionalEmbedding2d(nn.Module):
    """DETR's sine code: D/2 channels for y then D/2 for x, positions normalised to (0, 2*pi]; no weights.

    Normalised with DETR's eps (1e-6), so it equals UniAD's `PositionEmbeddingSine(normalize=True)`."""

    def __init__(self, grid: int | Sequence[int], dim: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"sine positional embedding width must be a multiple of 4, got {dim}")
        self.grid = _pair(grid)
        h, w = self.grid
        half = dim // 2
        y = torch.arange(1, h + 1, dtype=torch.float32)[:, None].expand(h, w) / (h + 1e-6) * 2 * math.pi
        x = torch.arange(1, w + 1, dtype=torch.float32)[None].expand(h, w) / (w + 1e-6) * 2 * math.pi
        freq = temperature ** (2 * (torch.arange(half) // 2) / half)  # (D/2,)

        def code(p: Tensor) -> Tensor:
            p = p[..., None] / freq  # (h, w, D/2)
            return torch.stack([p[..., 0::2].sin(), p[..., 1::2].cos()], dim=-1).flatten(2)

        self.register_buffer("code", torch.cat([code(y), code(x)], dim=-1).flatten(0, 1), persistent=False)

    def forward(self) -> Tensor:
        return self.code  # (h*w, D)


def build_positional_embedding(kind: str, grid: int | Sequence[int], dim: int) -> nn.Module:
    """`kind`: 'learned' or 'sine'."""
    if kind == "learned":
        return LearnedPositionalEmbedding2d(grid, dim)
    if kind == "sine":
        return SinePositionalEmbedding2d(grid, dim)
    raise ValueError(f"unknown positional embedding '{kind}'; choose 'learned' or 'sine'")
