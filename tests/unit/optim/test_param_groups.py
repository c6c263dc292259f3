"""ADer's weight-decay groups (uad.optim.param_groups)."""

from __future__ import annotations

import torch
from torch import nn

from uad.optim.param_groups import no_decay_1d_groups


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)  # weight decays, bias not
        self.norm = nn.LayerNorm(4)  # both 1-D: no decay
        self.dt_projs_bias = nn.Parameter(torch.zeros(2, 4))  # 2-D, not named *.bias: decays (as in ADer)
        self.frozen = nn.Parameter(torch.zeros(5), requires_grad=False)  # left out


def test_biases_and_1d_tensors_go_without_weight_decay():
    net = Tiny()
    no_decay, decay = no_decay_1d_groups(net)
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    expected = {id(net.linear.bias), id(net.norm.weight), id(net.norm.bias)}
    assert {id(p) for p in no_decay["params"]} == expected
    assert {id(p) for p in decay["params"]} == {id(net.linear.weight), id(net.dt_projs_bias)}
    optimizer = torch.optim.AdamW(no_decay_1d_groups(net), lr=0.1, weight_decay=0.5)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.0, 0.5]
