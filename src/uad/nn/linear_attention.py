"""Linear attention with the ELU + 1 feature map (Dinomaly's decoder, official `LinearAttention2`).

Softmax attention lets every token copy any other token exactly, which makes a reconstruction decoder an
identity mapping that also reconstructs anomalies. The kernelised form phi(q) . phi(k) with
phi(u) = ELU(u) + 1 cannot focus that sharply (Dinomaly's "unfocused" attention), and costs O(N d^2)
instead of O(N^2 d). There is no 1/sqrt(d) scale and no softmax; any attention mask is ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from uad.nn.attention import FusedQKVAttention


def elu_feature_map(x: Tensor) -> Tensor:
    """phi(u) = ELU(u) + 1: positive, so the kernel weights and their normaliser are positive."""
    return F.elu(x) + 1.0


def linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = 0.0) -> Tensor:
    """out_i = phi(q_i)^T (sum_s phi(k_s) v_s^T) / (phi(q_i) . sum_s phi(k_s) + eps).

    q, k, v: (..., N, d). Computed in (at least) float32 whatever the autocast dtype (the normaliser is a
    long sum of positive terms, which fp16 / bf16 round badly; the official README reports NaNs in fp16).
    `eps` = 0 is the official kernel; its README suggests 1e-6 if NaNs appear.
    """
    dtype = q.dtype
    work = torch.promote_types(dtype, torch.float32)
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = elu_feature_map(q.to(work)), elu_feature_map(k.to(work)), v.to(work)
        kv = torch.einsum("...sd,...se->...de", k, v)  # (..., d, d)
        normaliser = torch.einsum("...nd,...d->...n", q, k.sum(dim=-2)) + eps  # (..., N)
        out = torch.einsum("...nd,...de->...ne", q, kv) / normaliser.unsqueeze(-1)  # (..., N, d)
    return out.to(dtype)


class LinearAttention(FusedQKVAttention):
    """Multi-head linear attention on (B, N, D) tokens: qkv projection, kernel per head, projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, eps: float = 0.0) -> None:
        super().__init__(dim, num_heads, qkv_bias)
        self.eps = eps

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return linear_attention(q, k, v, self.eps)
