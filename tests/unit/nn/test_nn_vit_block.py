"""uad.nn.vit_block: Dinomaly's noisy MLP bottleneck and pre-norm ViT block; with uad.nn.attention's
SelfAttention it is ViTAD's decoder block, checked against the definition and against timm's `Block`, whose
key names and parameters it shares (ADer's ViT decoder is a timm VisionTransformer)."""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.vision_transformer import Block
from torch import nn

from uad.nn.attention import SelfAttention
from uad.nn.vit_block import NoisyBottleneck, ViTBlock


def test_bottleneck_is_a_plain_mlp_in_eval_and_noisy_in_training():
    torch.manual_seed(0)
    bottleneck = NoisyBottleneck(8, hidden_ratio=2.0, dropout=0.5)
    x = torch.randn(2, 5, 8)
    plain = bottleneck.fc2(bottleneck.act(bottleneck.fc1(x)))  # (B, N, D)
    torch.testing.assert_close(bottleneck.eval()(x), plain)
    assert bottleneck.fc1.out_features == 16
    noisy = bottleneck.train()(x)
    assert noisy.shape == x.shape and not torch.allclose(noisy, plain)


def test_block_adds_the_mixer_then_the_mlp_of_each_normed_input():
    torch.manual_seed(0)

    class Doubling(nn.Module):  # a stand-in token mixer, so that the block's own arithmetic is checked
        def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
            super().__init__()

        def forward(self, x):
            return 2 * x

    block = ViTBlock(6, num_heads=2, mixer=Doubling).eval()
    x = torch.randn(2, 4, 6)
    mixed = x + 2 * block.norm1(x)
    torch.testing.assert_close(block(x), mixed + block.mlp(block.norm2(mixed)))
    assert block.norm1.eps == 1e-8


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
