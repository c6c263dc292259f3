"""uad.nn.vit_block: Dinomaly's noisy MLP bottleneck and pre-norm ViT block."""

from __future__ import annotations

import torch
from torch import nn

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
