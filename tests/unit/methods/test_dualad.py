"""DualAD: parity with the official model, its own blocks (memory, pseudo-anomaly noise, per-level loss and
map, MFAA aligner), and training and evaluation through the real configs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import compose_config
from uad import builders, pipeline
from uad.methods.dualad import DualAD
from uad.nn.align import align_avgpool
from uad.nn.level_error import level_mse_sum, level_rms_product
from uad.nn.memory import MemoryModule
from uad.nn.noise import SpatialNoise

# --- memory module -----------------------------------------------------------------------------------


def _memory(rows: list[list[float]], threshold: float | None) -> MemoryModule:
    memory = MemoryModule(len(rows), len(rows[0]), shrink_threshold=threshold)
    with torch.no_grad():
        memory.weight.copy_(torch.tensor(rows))
    return memory


def test_memory_hard_shrinkage_keeps_the_slots_above_the_threshold_and_renormalises():
    # slots e1, e2, -e1 and the query e1: cosines (1, 0, -1), softmax (e, 1, 1/e) / (e + 1 + 1/e)
    memory = _memory([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], threshold=0.1)
    z = math.e + 1 + 1 / math.e
    soft = torch.tensor([math.e / z, 1 / z, 1 / (math.e * z)])  # 0.665, 0.245, 0.090
    assert soft[2] < 0.1 < soft[1]
    kept = torch.tensor([soft[0], soft[1], 0.0]) / (soft[0] + soft[1])
    weights, read = memory(torch.tensor([[3.0, 0.0]]))  # cosine addressing: the norm of x does not matter
    torch.testing.assert_close(weights[0], kept)
    torch.testing.assert_close(read[0], torch.tensor([kept[0], kept[1]]))


def test_memory_default_threshold_is_one_over_the_slots_and_there_is_no_residual():
    memory = _memory([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], threshold=None)
    assert memory.shrink_threshold == pytest.approx(1 / 3)
    weights, read = memory(torch.tensor([[1.0, 0.0]]))  # only the first slot is above 1/3: read = e1
    torch.testing.assert_close(weights[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(read[0], torch.tensor([1.0, 0.0]))


def test_memory_init_unit_rows_and_addressing_weights_sum_to_one():
    torch.manual_seed(0)
    memory = MemoryModule(196, 256)
    torch.testing.assert_close(memory.weight.norm(dim=-1), torch.ones(196))
    weights, read = memory(torch.randn(2, 10, 256))
    assert weights.shape == (2, 10, 196) and read.shape == (2, 10, 256)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 10))
    kept = weights > 0
    assert kept.any(-1).all() and not kept.all()  # shrinkage drops slots but never all of them
    torch.testing.assert_close(read, weights @ memory.weight)


# --- pseudo-anomaly noise ----------------------------------------------------------------------------


def test_spatial_noise_in_training_only_scaled_by_each_channels_spread():
    torch.manual_seed(0)
    noise = SpatialNoise(scale=3.2)
    spread = torch.tensor([0.0, 0.5, 2.0, 8.0])  # per channel; channel 0 is constant over the tokens
    tokens = torch.randn(3, 4096, 4) * spread + 1.0  # (B, N, C)
    noisy = noise.train()(tokens)
    std = tokens.var(dim=1, keepdim=True).sqrt()  # (B, 1, C), per image and channel
    eps = (noisy - tokens)[..., 1:] / (std[..., 1:] * 3.2)
    assert torch.equal(noisy[..., 0], tokens[..., 0])  # no spread, no noise
    assert abs(eps.std().item() - 1.0) < 0.02 and abs(eps.mean().item()) < 0.02
    assert torch.equal(noise.eval()(tokens), tokens)


# --- per-level loss and map --------------------------------------------------------------------------


def test_loss_is_the_sum_of_each_levels_mse():
    target = torch.zeros(2, 4, 3, 3)
    rec = torch.cat([torch.full((2, 1, 3, 3), 2.0), torch.full((2, 3, 3, 3), 1.0)], dim=1)
    # level 1 (1 channel): MSE 4; level 2 (3 channels): MSE 1. A global MSE would give 7/4.
    assert level_mse_sum(rec, target, [1, 3]).item() == pytest.approx(5.0)
    assert F.mse_loss(rec, target).item() == pytest.approx(1.75)


def test_map_is_the_product_of_each_levels_rms_error():
    torch.manual_seed(0)
    target, rec = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    rms_1 = (rec[:, :2] - target[:, :2]).pow(2).mean(1, keepdim=True).sqrt()
    rms_2 = (rec[:, 2:] - target[:, 2:]).pow(2).mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(level_rms_product(rec, target, [2, 3]), rms_1 * rms_2)
    with pytest.raises(ValueError, match="do not add up"):
        level_rms_product(rec, target, [2, 2])


# --- MFAA aligner ------------------------------------------------------------------------------------


def test_aligner_equals_the_official_upsample_then_pool_and_a_per_level_average():
    """Official `models/necks/mfaa.py` `MFAA`: nearest `nn.Upsample(scale_factor=stride / s_a)` of every level
    to the first tap's stride s_a, concatenation, `AvgPool2d(16 / s_a)`; restated here with torch ops."""
    torch.manual_seed(0)
    strides = [2, 4, 8, 16]  # EfficientNet taps of a 112 px image (s_a = 2, pool 8)
    features = [torch.randn(2, c, 112 // s, 112 // s) for c, s in zip([3, 4, 5, 6], strides)]
    official = F.avg_pool2d(
        torch.cat([torch.nn.Upsample(scale_factor=s / 2)(f) for f, s in zip(features, strides)], 1), 8, 8
    )
    per_level = torch.cat([F.avg_pool2d(f, 16 // s, 16 // s) for f, s in zip(features, strides)], 1)
    aligned = align_avgpool(features, strides)
    assert aligned.shape == (2, 18, 7, 7)
    torch.testing.assert_close(aligned, official)
    torch.testing.assert_close(aligned, per_level)


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


def test_unknown_variant_is_refused_with_the_key(tiny_cfg):
    with pytest.raises(Exception, match=r"method\.model\.variant 'xx' is not one of"):
        _tiny_model(tiny_cfg, "dualad_he", "method.model.variant=xx")


@pytest.mark.parametrize("method", ["dualad_he", "dualad_ho"])
def test_train_and_evaluate_on_synthetic(method, tiny_cfg):
    results = pipeline.run(tiny_cfg(f"method={method}", *TINY_DUALAD))
    assert set(results["per_class"]) == {"weave", "nut", "pill"}
    assert results["run"]["method"] == method and results["protocol"]["name"] == "dualad224"
    assert all(0.0 <= v <= 1.0 for v in results["mean"].values() if v is not None)
