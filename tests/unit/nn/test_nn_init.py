"""uad.nn.init: the xavier initialisations UniAD and DualAD start from."""

from __future__ import annotations

import math

import torch
from torch import nn

from uad.nn.attention import MultiHeadAttention
from uad.nn.init import shared_packed_xavier_, xavier_linear_


def test_xavier_linear_sets_linear_and_conv_weights_and_zeroes_their_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Conv2d(8, 16, 3), nn.LayerNorm(16))
    nn.init.constant_(model[2].weight, 3.0)
    xavier_linear_(model)
    bound = math.sqrt(6 / (64 + 256))
    assert model[0].weight.abs().max() <= bound and model[0].weight.std() > 0.8 * bound / math.sqrt(3)
    assert not model[0].bias.any() and not model[1].bias.any()
    assert torch.equal(model[2].weight, torch.full((16,), 3.0))  # norms keep their own init


def test_shared_packed_xavier_gives_every_attention_the_same_qkv_from_one_packed_draw():
    torch.manual_seed(0)
    attentions = [MultiHeadAttention(32, 4, 0.0) for _ in range(3)]
    shared_packed_xavier_(attentions)
    q, k, v = (getattr(attentions[0], f"{n}_proj").weight for n in "qkv")
    bound = math.sqrt(6 / (32 + 3 * 32))  # xavier over the packed (3D, D) matrix, not over each (D, D)
    assert max(float(w.abs().max()) for w in (q, k, v)) <= bound
    assert not torch.equal(q, k)
    for other in attentions[1:]:
        for name in "qkv":
            proj = getattr(other, f"{name}_proj")
            assert torch.equal(proj.weight, getattr(attentions[0], f"{name}_proj").weight)
            assert not proj.bias.any()
