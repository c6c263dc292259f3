"""TF 'same' padding frozen at one input size, as the lukemelas EfficientNet port (UniAD's backbone) pads.

TF 'same' padding depends on the input size: a stride-2 convolution pads its input by
`max((ceil(i / s) - 1) * s + k - i, 0)` pixels in all, the smaller half before. timm's `Conv2dSame` works
this out for every input; the lukemelas port works it out once, for the model's native resolution (380 px
for B4), and keeps it. At 224 px B4's stride-2 5 x 5 depthwise convolution of stage 3 then pads its 56 x 56
input by (2, 2) where the per-input rule pads (1, 2), and every feature from there on samples a grid shifted
by one stage-2 pixel (4 input pixels). `freeze_same_padding` makes a timm model pad the lukemelas way.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import get_same_padding
from torch import Tensor, nn
from torch.func import functional_call


class StaticSameConv2d(nn.Conv2d):
    """A convolution that zero-pads its input by a fixed (left, right, top, bottom) before convolving.

    It takes over the parameters of the convolution it replaces, so state-dict keys stay the same.
    """

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            0,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            device="meta",  # placeholders: the parameters below are the replaced convolution's
        )
        self.weight = conv.weight
        self.bias = conv.bias
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(F.pad(x, self.pad), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, static_pad={self.pad}"


def meta_forward(net: nn.Module, size: int) -> Any:
    """`net` applied to a (1, 3, size, size) input on the meta device: shapes only, no arithmetic and no
    copy of the weights (each parameter and buffer is swapped for a meta tensor of its shape)."""
    tensors = {name: t.to("meta") for name, t in itertools.chain(net.named_parameters(), net.named_buffers())}
    with torch.no_grad():
        return functional_call(net, tensors, (torch.empty(1, 3, size, size, device="meta"),))


def freeze_same_padding(net: nn.Module, size: int) -> None:
    """Replace every per-input TF 'same' convolution of `net` (timm's `Conv2dSame`) by a `StaticSameConv2d`
    that always pads as the original does for a `size` x `size` image (the lukemelas port's static padding).
    Convolutions whose 'same' padding never depends on the input (stride 1) are already static in timm."""
    dynamic = {name: m for name, m in net.named_modules() if isinstance(m, Conv2dSame)}
    inputs: dict[str, tuple[int, int]] = {}

    def record(name: str, _module: nn.Module, args: tuple[Tensor, ...]) -> None:
        inputs[name] = tuple(args[0].shape[-2:])

    handles = [m.register_forward_pre_hook(partial(record, name)) for name, m in dynamic.items()]
    try:
        meta_forward(net, size)
    finally:
        for handle in handles:
            handle.remove()
    for name, conv in dynamic.items():
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        pad_h = get_same_padding(inputs[name][0], kh, sh, dh)
        pad_w = get_same_padding(inputs[name][1], kw, sw, dw)
        parent, _, child = name.rpartition(".")
        static = StaticSameConv2d(conv, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        setattr(net.get_submodule(parent), child, static)
