"""ResNet bottleneck blocks and stages, in both directions: down (the encoder's strided 3x3 convolution)
and up (a 2x2 transposed convolution in its place), the blocks of RD4AD's one-class bottleneck and of its
decoder that mirrors the encoder (official hq-deng/RD4AD `resnet.py` `AttnBottleneck` / `BN_layer` and
`de_resnet.py` `Bottleneck`; ADer `model/rd.py`).

A block is conv1x1 -> BN -> ReLU -> conv3x3 (or, going up with stride 2, deconv2x2) -> BN -> ReLU ->
conv1x1 -> BN, plus the shortcut (identity, or a strided conv1x1 / deconv2x2 + BN where the shape
changes), then ReLU. Convolutions have no bias; `resnet_init_` starts them as torchvision's ResNet does.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def deconv2x2(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """Doubles the resolution exactly: (H, W) -> (2H, 2W)."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2, bias=False)


class Bottleneck(nn.Module):
    """One bottleneck block `in_ch -> width -> out_ch`; `stride` 2 halves the grid (`up=False`) or doubles
    it (`up=True`, transposed convolutions in the 3x3's and the shortcut's place)."""

    def __init__(self, in_ch: int, width: int, out_ch: int, stride: int = 1, up: bool = False) -> None:
        super().__init__()
        resample = stride != 1
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = deconv2x2(width, width) if up and resample else conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if resample or in_ch != out_ch:
            proj = deconv2x2(in_ch, out_ch) if up and resample else conv1x1(in_ch, out_ch, stride)
            self.shortcut = nn.Sequential(proj, nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + identity)


def resnet_stage(
    in_ch: int, width: int, out_ch: int, blocks: int, stride: int = 2, up: bool = False
) -> nn.Sequential:
    """`blocks` bottlenecks; the first one resamples by `stride` and changes the channels to `out_ch`."""
    return nn.Sequential(
        Bottleneck(in_ch, width, out_ch, stride, up),
        *(Bottleneck(out_ch, width, out_ch) for _ in range(blocks - 1)),
    )


def resnet_init_(module: nn.Module) -> None:
    """torchvision's ResNet start: kaiming-normal (fan_out, ReLU) convolutions, BatchNorm weight 1 and bias 0;
    transposed convolutions keep PyTorch's default (the official code's loop does not reach them)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
