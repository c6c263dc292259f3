"""ViTAD: the official parameter count and taps, the loss and map against their definitions (ADer's
CosLoss and cal_anomaly_map, written out here), the CNN variant's channel slices, the recipe's optimiser."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import compose_config
from uad import builders
from uad.encoders import Encoder, get_spec
from uad.methods.vitad import ViTAD, ViTADCNN

# ADer's ViTAD on ViT-S/16 at 256 px (zhangzjn/ADer @ 902937a, model/vitad.py, vitad_256_100e.py), counted
# from its classes: Fusion Linear(384, 384) = 147,840; the student's pos_embed 256 x 384 = 98,304 and 9 timm
# Blocks of 12 D^2 + 13 D = 1,774,464 each; total 16,216,320. ADer's optimiser also holds the student's unused
# patch embedding (295,296), class token (384), final norm (768) and 1000-class head (385,000): 16,897,768.
VITS_256 = {"fusion": 147_840, "decoder": 9 * 1_774_464}


def _tiny(backbone: str = "vits16_dino", students=(1, 2, 3)) -> ViTAD:
    """A 3-block decoder on the first four ViT blocks, or on Lite0's default taps, at 64 px."""
    torch.manual_seed(0)
    taps = (0, 1, 2, 3) if backbone == "vits16_dino" else ViTAD.default_taps(get_spec(backbone))
    return ViTAD(Encoder(backbone, pretrained=False, taps=taps, input_size=64), depth=3, students=students)


@pytest.fixture(scope="module")
def vit() -> ViTAD:
    return _tiny()


def test_loss_and_map_follow_aders_definitions(vit):
    """CosLoss(avg=False, flat=True): sum over levels of the batch mean of 1 - cos of the flattened maps;
    cal_anomaly_map(amap_mode='add'): sum over levels of the upsampled point-wise 1 - cos / (L * L)."""
    net = vit
    out = net(torch.randn(2, 3, 64, 64))
    teachers, students = out["teachers"], out["students"]
    assert len(teachers) == 3 and teachers[0].shape == (2, 384, 4, 4)
    expected_loss = 0.0
    expected_map = torch.zeros(2, 1, 64, 64)
    for t, s in zip(teachers, students):
        cos = (t.flatten(1) * s.flatten(1)).sum(1) / (t.flatten(1).norm(dim=1) * s.flatten(1).norm(dim=1))
        expected_loss = expected_loss + (1 - cos).mean()
        point = 1 - (t * s).sum(1, keepdim=True) / (t.norm(dim=1, keepdim=True) * s.norm(dim=1, keepdim=True))
        expected_map += F.interpolate(point, size=(64, 64), mode="bilinear", align_corners=True)
    torch.testing.assert_close(net.loss(out), expected_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.anomaly_map, expected_map / 9, rtol=1e-5, atol=1e-6)


def test_students_pair_deepest_with_the_shallowest_teacher(vit):
    seen = []
    hooks = [b.register_forward_hook(lambda module, args, output: seen.append(output)) for b in vit.decoder]
    out = vit(torch.randn(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    assert torch.equal(out["students"][0], seen[2].transpose(1, 2).reshape(1, 384, 4, 4))
    assert torch.equal(out["students"][2], seen[0].transpose(1, 2).reshape(1, 384, 4, 4))


def test_cnn_variant_compares_channel_slices_of_the_stages():
    net = _tiny("effnet_lite0")
    assert type(net) is ViTADCNN and type(copy.deepcopy(net)) is ViTADCNN
    assert net.encoder.taps == (1, 2, 3) and net.slices == [(0, 24), (24, 64), (64, 176)]
    out = net(torch.randn(2, 3, 64, 64))
    assert [t.shape[1] for t in out["teachers"]] == [24, 40, 112] == [s.shape[1] for s in out["students"]]
    assert out["neck"].shape == (2, 16, 176) and out.anomaly_map.shape == (2, 1, 64, 64)


def test_students_must_match_the_teacher_taps():
    with pytest.raises(ValueError, match=r"students .* one per teacher tap"):
        _tiny("effnet_lite0", students=(1, 2))
    with pytest.raises(ValueError, match=r"in 1\.\.3"):
        _tiny("effnet_lite0", students=(1, 2, 4))


def test_the_recipe_on_vits16_dino_at_256_has_the_official_parameters_taps_and_optimiser():
    cfg = compose_config(["experiment=vitad_ader256", "backbone.pretrained=false"])
    net = builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))
    counts = net.parameter_counts()
    assert net.encoder.taps == (2, 5, 8, 11)  # ADer's teachers [3, 6, 9] and neck [12], counted from 1
    assert counts["per_module"] == VITS_256
    assert counts["trainable_params"] == 16_216_320 == sum(VITS_256.values()) + 98_304
    assert net.pos_embed.shape == (1, 256, 384) and len(net.decoder) == 9
    assert net.decoder[0].norm1.eps == 1e-6 and net.decoder[0].attn.num_heads == 6
    assert ViTAD.default_taps(get_spec("dinov2_vitl14")) == (5, 11, 17, 23)

    optimizer = builders.build_module(cfg, net).configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    vectors, matrices = optimizer.param_groups  # ADer's add_weight_decay
    assert vectors["weight_decay"] == 0.0 and all(p.ndim == 1 for p in vectors["params"])
    assert matrices["weight_decay"] == 1e-4 and all(p.ndim >= 2 for p in matrices["params"])
    assert any(p is net.pos_embed for p in matrices["params"])  # (1, N, D): decayed, as in ADer
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 16_216_320
    assert cfg.dataset.batch_size == 8 and cfg.trainer.max_epochs == 100 and cfg.seed == 42
    assert cfg.method.scheduler.step_size == 80 and cfg.method.grad_clip == 5.0
