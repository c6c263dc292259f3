"""MambaAD's network (uad.methods.mambaad): the official parameter count, the 2x patch expansion's layout,
the stage grouping and the loss (the map and all else: tests/parity/test_mambaad_parity.py)."""

from __future__ import annotations

import pytest
import torch

from uad.encoders import Encoder
from uad.methods.base import NetOutput
from uad.methods.mambaad import MambaAD, PatchExpand, lss_depths


def test_trainable_parameters_equal_the_official_count():
    """17,444,928: the official MAMBAAD (lewandofskee/MambaAD model/mambaad.py, configs/mambaad/
    mambaad_mvtec.py) on timm ResNet-34 at 256 px, counted by tests/parity/make_fixtures.py --method mambaad
    (fixture "parameter_counts"); ADer's copy adds 12,096 for a 3 x 3 branch it never uses."""
    net = MambaAD(Encoder("res34", pretrained=False, taps=(1, 2, 3), input_size=256))
    assert sum(p.numel() for p in net.trainable_parameters()) == 17_444_928


def test_patch_expand_puts_each_sub_pixel_in_its_place():
    """Output channel (p1, p2, c) of the linear layer becomes channel c of pixel (2h + p1, 2w + p2)."""
    expand = PatchExpand(in_dim=4, out_dim=1)
    with torch.no_grad():
        expand.expand.weight.copy_(torch.eye(4))
        expand.norm = torch.nn.Identity()
    x = torch.arange(4.0).view(1, 1, 1, 4)  # one pixel whose channels are 0, 1, 2, 3
    assert expand(x)[0, :, :, 0].tolist() == [[0.0, 1.0], [2.0, 3.0]]


def test_stages_group_their_blocks_in_threes_else_twos():
    assert lss_depths(3) == [3] and lss_depths(4) == [2, 2] and lss_depths(6) == [3, 3]
    with pytest.raises(ValueError, match="divisible by 3 or 2"):
        lss_depths(5)


def test_loss_is_five_times_the_sum_of_the_level_mses():
    net = MambaAD.__new__(MambaAD)
    torch.nn.Module.__init__(net)
    net.loss_weight = 5.0
    levels = [torch.ones(1, 2, 2, 2), torch.ones(1, 3, 1, 1)]
    decoded = [torch.zeros(1, 2, 2, 2), 2 * torch.ones(1, 3, 1, 1)]
    output = NetOutput(torch.zeros(1, 1, 4, 4), {"levels": levels, "decoded": decoded})
    assert net.loss(output).item() == pytest.approx(5 * 1.0 + 5 * 1.0)
