"""RD4AD's sizes and recipes (its numbers against the official code: tests/parity/test_rd4ad_parity.py)."""

from __future__ import annotations

import pytest

from tests.conftest import compose_config
from uad import builders
from uad.encoders import get_spec
from uad.methods.rd4ad import RD4AD


def _net(*overrides: str) -> RD4AD:
    cfg = compose_config(["method=rd4ad", "backbone=wres50", "backbone.pretrained=false", *overrides])
    return builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))


def test_trainable_parameters_are_the_official_and_aders():
    """Official bn + decoder 92,195,328 less the unused conv4/bn4 (8,392,704); ADer's model/rd.py with
    timm's Bottleneck in its OCE: 55,747,072 (counted from ADer's classes, docs/methods.md)."""
    assert _net().parameter_counts()["trainable_params"] == 83_802_624
    ader = _net("method.model.bottleneck_base_width=64").parameter_counts()["trainable_params"]
    assert ader == 55_747_072


def test_it_takes_the_stride_4_8_16_taps_of_a_cnn():
    assert RD4AD.default_taps(get_spec("wres50")) == (1, 2, 3)
    assert RD4AD.default_taps(get_spec("effnet_lite0")) == (1, 2, 3)  # not the stride-2 stage


@pytest.mark.parametrize(
    ("recipe", "setting", "epochs", "base_width", "reduction", "clip"),
    [("rd4ad_sep", "separate", 200, 128, "sum", None), ("rd4ad_ader256", "unified", 100, 64, "ader", 5.0)],
)
def test_recipes(recipe, setting, epochs, base_width, reduction, clip, tmp_path):
    cfg = compose_config([f"experiment={recipe}"], output_dir=tmp_path, data_dir=tmp_path)
    assert (cfg.dataset.setting, cfg.trainer.max_epochs, cfg.dataset.batch_size) == (setting, epochs, 16)
    model = cfg.method.model
    assert (model.bottleneck_base_width, model.map_reduction, cfg.method.grad_clip) == (
        base_width,
        reduction,
        clip,
    )
    assert (cfg.method.optimizer.lr, list(cfg.method.optimizer.betas)) == (0.005, [0.5, 0.999])
    assert (cfg.protocol.name, cfg.protocol.image_size, cfg.protocol.score) == ("rd4ad256", 256, "max")
