"""Parameter groups for weight decay."""

from __future__ import annotations

from torch import nn


def no_decay_1d_groups(net: nn.Module) -> list[dict]:
    """The trainable parameters in two optimiser groups: biases and 1-D tensors (norm scales, Mamba's D
    skips) without weight decay, all others with the optimiser's (timm's and ADer's `add_weight_decay`,
    which every ADer recipe applies)."""
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay}]
