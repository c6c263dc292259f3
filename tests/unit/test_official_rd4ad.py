"""RD4AD's and ADer's checkpoint layouts: recognised by their keys and mapped onto our RD4AD's names (the
numbers through the whole model are tests/parity/test_rd4ad_parity.py's)."""

from __future__ import annotations

import torch

from uad.official import flat_state, recognise, trainable_state

T = torch.zeros(1)


def test_rd4ad_main_py_file_is_recognised_and_its_unused_conv4_dropped():
    checkpoint = {
        "bn": {"conv1.weight": T, "bn3.bias": T, "bn_layer.0.downsample.0.weight": T, "conv4.weight": T},
        "decoder": {"layer1.0.upsample.1.weight": T, "layer3.5.conv3.weight": T},
    }
    state = flat_state(checkpoint)
    assert recognise(state) == "rd4ad"
    assert set(trainable_state("rd4ad", "rd4ad", state)) == {
        "bottleneck.fuse.0.0.weight",
        "bottleneck.fuse.1.1.bias",
        "bottleneck.oce.0.shortcut.0.weight",
        "decoder.stages.0.0.shortcut.1.weight",
        "decoder.stages.2.5.conv3.weight",
    }


def test_ader_ckpt_and_net_files_are_recognised_and_mapped_without_the_encoder():
    net = {"net_t.layer3.5.bn3.weight": T, "mff_oce.conv2.weight": T, "net_s.layer2.0.conv2.weight": T}
    for checkpoint in ({"net": net, "optimizer": {}, "iter": 5, "metric_recorder": {}}, net):
        state = flat_state(checkpoint)
        assert recognise(state) == "ader_rd"
        assert set(trainable_state("rd4ad", "ader_rd", state)) == {
            "bottleneck.fuse.0.3.weight",
            "decoder.stages.1.0.conv2.weight",
        }
