"""ResNet bottlenecks going down (torchvision's block) and up (transposed convolutions), and their stages."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck

from uad.nn.resnet_blocks import Bottleneck, resnet_init_, resnet_stage


def test_a_strided_bottleneck_is_torchvisions():
    torch.manual_seed(0)
    ours = Bottleneck(64, 32, 128, stride=2).eval()
    downsample = nn.Sequential(nn.Conv2d(64, 128, 1, stride=2, bias=False), nn.BatchNorm2d(128))
    theirs = TorchvisionBottleneck(64, 32, stride=2, downsample=downsample).eval()  # width 32, out 128
    state = {k.replace("shortcut.", "downsample."): v for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state)
    x = torch.randn(2, 64, 16, 16)
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours(x).shape == (2, 128, 8, 8)


def test_going_up_doubles_the_grid_with_transposed_convolutions():
    block = Bottleneck(128, 32, 64, stride=2, up=True)
    assert isinstance(block.conv2, nn.ConvTranspose2d) and isinstance(block.shortcut[0], nn.ConvTranspose2d)
    assert block(torch.randn(1, 128, 5, 7)).shape == (1, 64, 10, 14)
    same = Bottleneck(64, 16, 64, up=True)
    assert same.shortcut is None and isinstance(same.conv2, nn.Conv2d)


def test_a_stage_resamples_once_and_keeps_its_width():
    stage = resnet_stage(64, 16, 32, blocks=3, stride=2, up=True)
    assert len(stage) == 3 and stage[0].shortcut is not None
    assert all(block.shortcut is None for block in stage[1:])
    assert stage(torch.randn(1, 64, 4, 4)).shape == (1, 32, 8, 8)


def test_resnet_init_starts_convolutions_as_torchvision_and_leaves_transposed_ones():
    torch.manual_seed(0)
    block = Bottleneck(256, 256, 256, stride=2, up=True)
    before = block.conv2.weight.clone()
    resnet_init_(block)
    assert torch.equal(block.conv2.weight, before)  # the official loop does not reach ConvTranspose2d
    std = block.conv1.weight.std().item()  # kaiming normal, fan_out = 256 x 1 x 1
    assert abs(std - (2 / 256) ** 0.5) < 0.01
    assert torch.equal(block.bn1.weight, torch.ones(256)) and torch.equal(block.bn1.bias, torch.zeros(256))
