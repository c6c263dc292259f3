"""Intrinsic normal prototypes (INP-Former, Luo et al., CVPR 2025): normal patterns taken from the image under
test itself, instead of from the training set.

- `PrototypeExtractor`: a handful of learnable query tokens cross-attend to the image's tokens; what they
  gather are the image's prototypes (B, M, D). Because they are recomputed for every image, they describe
  the normal look of that very image (its texture, its pose, its lighting).
- `coherence_loss`: every image token should lie close (in cosine distance) to at least one prototype, so the
  prototypes cover the image's normal content rather than collapsing onto one pattern. The per-token
  distance is itself a coarse anomaly map.
- `PrototypeGuidedBlock`: a decoder block whose attention reads only the prototypes (queries: the tokens;
  keys and values: the prototypes) and has no residual path around it, so a token can only be rebuilt as a
  mixture of normal prototypes: an anomalous token has nothing to copy from and reconstructs badly. The
  attention weights are ReLU(scale_h * cos(q, k)), not a softmax: a token may take little from every
  prototype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import Tensor, nn

from uad.nn.attention import CrossAttention, PackedKVCrossAttention


class PrototypeExtractor(nn.Module):
    """Learnable tokens (M, D) -> one pre-norm cross-attention block over the image tokens -> (B, M, D).

    The same LayerNorm normalises the queries and the image tokens; softmax attention scaled by
    1/sqrt(head dim); residual attention and MLP, as a transformer decoder layer without self-attention.
    The tokens start as N(0, 1) draws (they are not re-initialised with the Linear layers)."""

    def __init__(
        self, dim: int, num_prototypes: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-8
    ) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(num_prototypes, dim))
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, tokens: Tensor) -> Tensor:
        queries = self.tokens.repeat(tokens.shape[0], 1, 1)  # (B, M, D); a copy, not a view of the parameter
        context = self.norm1(tokens)  # (B, N, D)
        x = queries + self.attn(self.norm1(queries), context)  # (B, M, D)
        return x + self.mlp(self.norm2(x))


def coherence_loss(tokens: Tensor, prototypes: Tensor) -> tuple[Tensor, Tensor]:
    """(loss, distance): distance (B, N) = min over prototypes of 1 - cos(token, prototype); loss its mean.
    tokens (B, N, D), prototypes (B, M, D)."""
    cos = F.normalize(tokens, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)  # (B, N, M)
    distance = (1 - cos).min(dim=-1).values  # (B, N)
    return distance.mean(), distance


class PrototypeAttention(PackedKVCrossAttention):
    """Attention from tokens (queries) to prototypes (keys, values): per head,
    out_i = sum_m ReLU(scale_h * cos(q_i, k_m)) v_m, then the output projection. `scale` is learnt per head
    (starting at 1); there is no softmax, so the weights of a token need not sum to one."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__(dim, num_heads, qkv_bias)
        self.scale = nn.Parameter(torch.ones(num_heads, 1, 1))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        cos = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)  # (B, heads, N, M)
        return F.relu(cos * self.scale) @ v


class PrototypeGuidedBlock(nn.Module):
    """x = attn(LN(x), LN(prototypes)), with no residual; x += MLP(LN(x)). One LayerNorm for the tokens and
    the prototypes, as in the extractor."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-8) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = PrototypeAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: Tensor, prototypes: Tensor) -> Tensor:
        x = self.attn(self.norm1(x), self.norm1(prototypes))  # (B, N, D)
        return x + self.mlp(self.norm2(x))
