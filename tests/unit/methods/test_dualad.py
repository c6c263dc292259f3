"""DualAD: parity with the official model, He and Ho, noise, loss and map through the real configs (its
blocks, memory, spatial noise, per-level loss and map, MFAA aligner, are tested in tests/unit/nn/; the
end-to-end run in tests/integration/test_method_runs.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import compose_config
from uad import builders, pipeline
from uad.methods.dualad import DualAD, DualADHe, DualADHo
from uad.nn.level_error import level_mse_sum

# --- parity: trainable parameters of the official model -------------------------------------------------
# Recounted from cyhaan/DualAD `models/reconstructions/dualad.py` (classes DualAD, MemoryModule,
# TransformerEncoderLayer, TransformerDecoderLayer, MultiHeadAttention, FeedForward, QueryLearned,
# PositionEmbeddingLearned) with the official config (experiments/MVTec-AD/config.yaml), C input channels:
#   attention 4 (D^2 + D); FFN D F + F + F D + D; LayerNorm 2 D. NDN (D 256, F 1024): encoder layer
#   263,168 + 525,568 + 2 x 512 = 789,760, decoder layer 2 x 263,168 + 525,568 + 3 x 512 = 1,053,440;
#   4 + 4 layers = 7,372,800; learned positions 2 x 14 x 128 = 3,584.
#   He: MLPs C->4096->1024 and 1024->4096->C = 8193 C + 8,397,824; memories 4 x 196 x 256 = 200,704.
#       Total 8193 C + 15,974,912.
#   Ho: Linears C->1024, 1024->C = 2049 C + 1,024; 2 encoder layers at 1024 (F 4096) 2 x 12,596,224;
#       2 decoder layers 2 x 16,796,672 + 2 learned queries 2 x 196 x 1024; positions Linear 256->1024
#       263,168. Total 2049 C + 66,827,776.
# C: WRes50/Res50 layer1-3 1792, Res34 448, EfficientNet-B4 blocks 1,5,9,21 272, ViT-S/16 4 x 384 = 1536.
# These are the trainable parts of the paper's Params table (the rest is the frozen backbone as built).


def _he(c: int) -> int:
    return 8193 * c + 15_974_912


def _ho(c: int) -> int:
    return 2049 * c + 66_827_776


OFFICIAL = {
    ("wres50", "dualad_he"): 30_656_768,
    ("wres50", "dualad_ho"): 70_499_584,
    ("res34", "dualad_he"): 19_645_376,
    ("res34", "dualad_ho"): 67_745_728,
    ("res50", "dualad_he"): 30_656_768,
    ("res50", "dualad_ho"): 70_499_584,
    ("effb4", "dualad_he"): 18_203_408,
    ("effb4", "dualad_ho"): 67_385_104,
    ("vits16_dino", "dualad_he"): 28_559_360,
    ("vits16_dino", "dualad_ho"): 69_975_040,
}
CHANNELS = {"wres50": 1792, "res34": 448, "res50": 1792, "effb4": 272, "vits16_dino": 1536}


def test_the_official_counts_follow_the_recount():
    for (backbone, method), count in OFFICIAL.items():
        assert count == (_he if method == "dualad_he" else _ho)(CHANNELS[backbone])


@pytest.mark.parametrize("method", ["dualad_he", "dualad_ho"])
def test_describe_wres50_reports_the_official_parameter_count_and_shapes(method, tmp_path):
    cfg = compose_config(
        [f"method={method}", "backbone=wres50", "backbone.pretrained=false", "mode=describe"],
        output_dir=tmp_path,
    )
    info = pipeline.run(cfg)
    assert info["input_size"] == 224
    assert info["trainable_params"] == OFFICIAL[("wres50", method)]
    shapes = info["shapes"]
    assert shapes["aligned"] == shapes["reconstruction"] == [1, 1792, 14, 14]
    assert shapes["streams"] == shapes["decoded"] == [[1, 196, 256]] * 4
    assert shapes["anomaly_map"] == [1, 1, 224, 224]
    assert ("memories" in info["per_module"]) == (method == "dualad_he")
    # MACs of the official model (../shared/reference/methods.md 4.2, FlopCounterMode / 2): WRes50 to
    # layer3 9.19 G; He reconstruction 6.27 G (paper: 15.5 in all); Ho 14.89 G, of which the official code
    # spends 9 x 196 x 256 x 1024 re-projecting the positional code at every attention, once here.
    assert info["gmacs_encoder"] == pytest.approx(9.19, abs=0.01)
    official = 6.27 if method == "dualad_he" else 14.89 - 9 * 196 * 256 * 1024 / 1e9
    assert info["gmacs_trainable"] == pytest.approx(official, abs=0.01)


@pytest.mark.parametrize(("backbone", "method"), [k for k in OFFICIAL if k[0] != "wres50"], ids=str)
def test_other_backbones_give_the_official_parameter_count(backbone, method, tmp_path):
    cfg = compose_config([f"method={method}", f"backbone={backbone}", "backbone.pretrained=false"], tmp_path)
    model = builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))
    assert sum(model.encoder.channels) == CHANNELS[backbone] and model.grid == (14, 14)
    assert model.parameter_counts()["trainable_params"] == OFFICIAL[(backbone, method)]


def test_default_taps_per_backbone():
    from uad.encoders import get_spec

    assert DualAD.default_taps(get_spec("wres50")) == (1, 2, 3)
    assert DualAD.default_taps(get_spec("effb4")) == (0, 1, 2, 3)
    assert DualAD.default_taps(get_spec("vits16_dino")) == (2, 5, 8, 11)
    assert DualAD.default_taps(get_spec("dinov2_vitl14")) == (5, 11, 17, 23)


# --- the model: noise in training only, loss, training and evaluation ------------------------------------

# The tiny 64 px input gives a 4 x 4 grid; narrow streams keep the tests fast.
TINY_DUALAD = [
    "method.model.neighbor_size=3",
    "method.model.hidden_dim=32",
    "method.model.ffn_dim=64",
    "method.model.memory_slots=24",
]


def _tiny_model(tiny_cfg, method: str, *overrides: str) -> DualAD:
    cfg = tiny_cfg(f"method={method}", *TINY_DUALAD, *overrides)
    model = builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))
    assert isinstance(model, DualAD) and model.grid == (4, 4)
    return model


@pytest.mark.parametrize("method", ["dualad_he", "dualad_ho"])
def test_pseudo_anomalies_only_in_training(method, tiny_cfg):
    images = torch.randn(2, 3, 64, 64)
    quiet = _tiny_model(tiny_cfg, method, "method.model.dropout=0.0", "method.model.noise_scale=0.0").train()
    torch.testing.assert_close(quiet(images)["reconstruction"], quiet(images)["reconstruction"])
    noisy = _tiny_model(tiny_cfg, method, "method.model.dropout=0.0").train()
    assert not torch.allclose(noisy(images)["reconstruction"], noisy(images)["reconstruction"])
    noisy.eval()
    out = noisy(images)
    torch.testing.assert_close(out["reconstruction"], noisy(images)["reconstruction"])
    expected = level_mse_sum(out["reconstruction"], out["aligned"], noisy.encoder.channels)
    torch.testing.assert_close(noisy.loss(out), expected)
    assert out["anomaly_map"].shape == (2, 1, 64, 64) and (out["anomaly_map"] >= 0).all()


def test_he_streams_are_read_from_the_memories(tiny_cfg):
    model = _tiny_model(tiny_cfg, "dualad_he").eval()
    out = model(torch.randn(2, 3, 64, 64))
    for stream, memory in zip(out["streams"], model.memories):
        weights = memory.address(stream)  # a read-out is a convex combination of the slots
        assert stream.shape == (2, 16, 32) and weights.shape == (2, 16, 24)
    slots = torch.stack([m.weight for m in model.memories])  # (S, M, D)
    assert all(
        s.norm(dim=-1).max() <= slots[i].norm(dim=-1).max() + 1e-5 for i, s in enumerate(out["streams"])
    )


def test_neighbour_mask_can_be_switched_off(tiny_cfg):
    model = _tiny_model(tiny_cfg, "dualad_ho", "method.model.neighbor_size=null").eval()
    assert model(torch.randn(1, 3, 64, 64))["anomaly_map"].shape == (1, 1, 64, 64)


@pytest.mark.parametrize(("method", "cls"), [("dualad_he", DualADHe), ("dualad_ho", DualADHo)])
def test_the_variant_key_builds_its_subclass_and_a_copy_keeps_it(method, cls, tiny_cfg):
    model = _tiny_model(tiny_cfg, method)
    assert type(model) is cls and type(copy.deepcopy(model)) is cls
    assert ("memories" in dict(model.named_children())) == (cls is DualADHe)
    assert ("pos_proj" in dict(model.named_children())) == (cls is DualADHo)


def test_unknown_variant_is_refused_with_the_key(tiny_cfg):
    with pytest.raises(Exception, match=r"method\.model\.variant 'xx' is not one of"):
        _tiny_model(tiny_cfg, "dualad_he", "method.model.variant=xx")
