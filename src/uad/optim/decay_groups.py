"""AdamW whose weight decay skips vectors: the rule of ADer's `optim.add_weight_decay` (and timm's
`param_groups_weight_decay`), under which its benchmark recipes train."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: tensors of one dimension or none (biases, norm weights) without weight decay,
    the rest (matrices, convolutions, embeddings) with `weight_decay`; empty groups left out."""
    params = list(params)
    if any(isinstance(p, dict) for p in params):
        raise TypeError("decay_groups takes parameters, not parameter groups")
    groups = [
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]


class AdamWNoVectorDecay(torch.optim.AdamW):
    """`torch.optim.AdamW` with the parameters split by `decay_groups` (ADer: `name='adamw'` with a
    weight decay, i.e. add_weight_decay's groups); every other argument is AdamW's."""

    def __init__(self, params: Iterable[nn.Parameter], weight_decay: float = 1e-2, **kwargs: Any) -> None:
        super().__init__(decay_groups(params, weight_decay), weight_decay=weight_decay, **kwargs)
