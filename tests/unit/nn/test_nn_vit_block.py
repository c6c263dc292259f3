"""The pre-norm ViT block with softmax self-attention (uad/nn/vit_block.py + uad/nn/attention.py
SelfAttention): ViTAD's decoder block, checked against the definition and against timm's `Block`, whose
key names and parameters it shares (ADer's ViT decoder is a timm VisionTransformer)."""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.vision_transformer import Block

from uad.nn.attention import SelfAttention
from uad.nn.vit_block import ViTBlock


def test_self_attention_is_softmax_attention_per_head():
    torch.manual_seed(0)
    attn = SelfAttention(12, num_heads=3)
    x = torch.randn(2, 5, 12)
    q, k, v = attn.qkv(x).split(12, dim=-1)  # (B, N, D) each, heads are contiguous slices of 4
    outs = []
    for h in range(3):
        part = slice(4 * h, 4 * h + 4)
        weights = torch.softmax(q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(4), dim=-1)
        outs.append(weights @ v[..., part])
    expected = attn.proj(torch.cat(outs, dim=-1))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_self_attention_refuses_an_indivisible_width():
    with pytest.raises(ValueError, match="not divisible"):
        SelfAttention(10, num_heads=3)


def test_vit_block_with_self_attention_equals_timms_block():
    torch.manual_seed(0)
    ours = ViTBlock(24, 4, mlp_ratio=4.0, qkv_bias=True, norm_eps=1e-6, mixer=SelfAttention)
    theirs = Block(24, 4, mlp_ratio=4.0, qkv_bias=True)  # LayerNorm eps 1e-6 in timm's ViT
    assert theirs.norm1.eps == 1e-6
    for p in theirs.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the same key names and shapes
    x = torch.randn(2, 7, 24)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
