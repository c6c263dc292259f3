"""Token-wise blocks of a reconstruction decoder: the noisy MLP bottleneck and the pre-norm ViT block.

Both follow Dinomaly (official `bMlp` and `Block` in `models/vision_transformer.py`): the bottleneck's
dropout is its only noise (it makes the decoder restore normal features from corrupted ones, so it cannot
learn an identity that would also pass anomalies through), and the blocks take any token mixer, linear
attention in Dinomaly.
"""

from __future__ import annotations

from collections.abc import Callable

from timm.layers import Mlp
from torch import Tensor, nn

from uad.nn.linear_attention import LinearAttention


class NoisyBottleneck(nn.Module):
    """Dropout -> Linear D->hD -> GELU -> Dropout -> Linear hD->D -> Dropout, one rate at all three."""

    def __init__(self, dim: int, hidden_ratio: float = 4.0, dropout: float = 0.2) -> None:
        super().__init__()
        hidden = int(dim * hidden_ratio)
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.fc1(self.drop(x)))  # (B, N, hD)
        return self.drop(self.fc2(self.drop(x)))  # (B, N, D)


class ViTBlock(nn.Module):
    """Pre-norm transformer block, x += mixer(LN(x)); x += MLP(LN(x)); no dropout, drop-path or LayerScale."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-8,
        mixer: Callable[..., nn.Module] = LinearAttention,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = mixer(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
