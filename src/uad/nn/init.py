"""Weight initialisation shared by the reconstruction networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def xavier_linear_(module: nn.Module) -> None:
    """xavier_uniform on every Linear/Conv weight inside `module`, zero biases (UniAD's and DualAD's
    `initializer: xavier_uniform`); embeddings and norms keep their own init."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def shared_packed_xavier_(attentions: Sequence[nn.Module]) -> None:
    """One xavier_uniform draw over the packed (3D, D) Q/K/V matrix, as `nn.MultiheadAttention` initialises
    its `in_proj_weight`, split into each attention's q/k/v projections, with zero biases; every attention
    in `attentions` gets the same values, as the official UniAD's deep-copied layers start."""
    q = attentions[0].q_proj.weight
    packed = torch.empty(3 * q.shape[0], q.shape[1], dtype=q.dtype, device=q.device)
    nn.init.xavier_uniform_(packed)
    for attention in attentions:
        for proj, part in zip((attention.q_proj, attention.k_proj, attention.v_proj), packed.chunk(3)):
            proj.weight.copy_(part)
            nn.init.zeros_(proj.bias)


def trunc_normal_init_(module: nn.Module, std: float = 0.01, bound: float = 0.03) -> None:
    """Dinomaly's and INP-Former's init of the trainable parts: Linear weights N(0, std) truncated to
    [-bound, bound], zero biases; LayerNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-bound, b=bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
