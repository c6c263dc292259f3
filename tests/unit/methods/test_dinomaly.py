"""Dinomaly: parity with the official implementation (parameter counts, shapes, groups, positional
embedding), the CNN variant and the recipes (the end-to-end run: tests/integration/test_method_runs.py)."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from omegaconf import open_dict

from tests.conftest import CONF_DIR, compose_config
from uad import builders, pipeline
from uad.encoders import Encoder
from uad.encoders.encoder import resample_grid_pos_embed
from uad.methods.dinomaly import Dinomaly, DinomalyCNN, default_heads
from uad.optim import StableAdamW

# Trainable parameters (bottleneck bMlp + 8 decoder Blocks with LinearAttention2) of the official ViTill,
# recounted from guojiajeremy/Dinomaly (dinomaly_mvtec_uni.py building models/uad.py ViTill with
# models/vision_transformer.py bMlp(D, 4D, D) and Block(D, heads, mlp_ratio=4, qkv_bias=True)):
#   bottleneck = (D*4D + 4D) + (4D*D + D) = 8D^2 + 5D
#   block      = 2 LayerNorms (4D) + qkv (3D^2 + 3D) + proj (D^2 + D) + MLP (8D^2 + 5D) = 12D^2 + 13D
# S (D=384): 1,181,568 + 8 * 1,774,464 = 15,377,280; B (768): 4,722,432 + 56,702,976 = 61,425,408;
# L (1024): 8,393,728 + 100,769,792 = 109,163,520 (the reference's table, §4.1, gives the same).
PARITY = {
    "dinov2_vits14_reg": (384, 1_181_568, 14_195_712, 15_377_280),
    "dinov2_vitb14_reg": (768, 4_722_432, 56_702_976, 61_425_408),
    "dinov2_vitl14_reg": (1024, 8_393_728, 100_769_792, 109_163_520),
}


def _formula(dim: int) -> tuple[int, int]:
    return 8 * dim * dim + 5 * dim, 8 * (12 * dim * dim + 13 * dim)


def _describe(backbone: str, tmp_path) -> dict:
    cfg = compose_config(
        ["mode=describe", "method=dinomaly", f"backbone={backbone}", "backbone.pretrained=false"],
        output_dir=tmp_path,
    )
    return pipeline.run(cfg)


@pytest.mark.parametrize(
    "backbone",
    [
        "dinov2_vits14_reg",
        "dinov2_vitb14_reg",
        pytest.param("dinov2_vitl14_reg", marks=pytest.mark.slow),
    ],
)
def test_describe_matches_the_official_counts_and_shapes_at_392(backbone, tmp_path):
    dim, bottleneck, decoder, total = PARITY[backbone]
    assert _formula(dim) == (bottleneck, decoder) and bottleneck + decoder == total
    info = _describe(backbone, tmp_path)
    assert info["input_size"] == 392
    assert info["trainable_params"] == total
    assert info["per_module"] == {"bottleneck": bottleneck, "decoder": decoder}
    shapes = info["shapes"]
    tokens = [1, 1 + 4 + 28 * 28, dim]  # cls, 4 registers, 28 x 28 patches
    assert shapes["taps"] == [tokens] * 8
    assert shapes["features"] == {"fused": tokens, "encoder_groups": [1, 2, dim, 28, 28]}
    assert shapes["fused"] == tokens
    assert shapes["decoder_blocks"] == [tokens] * 8
    assert shapes["encoder_groups"] == shapes["decoder_groups"] == [[1, dim, 28, 28]] * 2
    assert shapes["anomaly_map"] == [1, 1, 392, 392]
    assert info["encoder"]["taps"] == (
        [4, 6, 8, 10, 12, 14, 16, 18] if "vitl" in backbone else list(range(2, 10))
    )
    assert info["gmacs_trainable"] > 0


def _small_vit(**kwargs) -> Dinomaly:
    torch.manual_seed(0)
    return Dinomaly(Encoder("dinov2_vits14_reg", pretrained=False, input_size=56), **kwargs).eval()


def test_groups_pair_shallow_taps_with_the_last_decoder_blocks():
    """fuse_layer_encoder = fuse_layer_decoder = [[0,1,2,3],[4,5,6,7]] over the REVERSED decoder outputs:
    encoder group 1 = taps 0-3 (blocks 2-5) <-> decoder blocks 8,7,6,5; group 2 = taps 4-7 <-> blocks 4-1."""
    model = _small_vit()
    assert model.encoder_groups == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [len(model.decoder), default_heads(384), model.decoder[0].attn.num_heads] == [8, 6, 6]
    assert len(model.encoder.net.blocks) == 10  # the encoder runs only up to its last tap (block 9)
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        out = model(images)
        taps = model.encoder(images)
    blocks = out["decoder_blocks"]

    def as_map(tokens: torch.Tensor) -> torch.Tensor:  # drop cls + 4 registers, (B, N, D) -> (B, D, 4, 4)
        return tokens[:, 5:].transpose(1, 2).reshape(2, 384, 4, 4)

    expected_en = [
        as_map(sum(taps[i] for i in (0, 1, 2, 3)) / 4),
        as_map(sum(taps[i] for i in (4, 5, 6, 7)) / 4),
    ]
    expected_de = [
        as_map(sum(blocks[i] for i in (7, 6, 5, 4)) / 4),
        as_map(sum(blocks[i] for i in (3, 2, 1, 0)) / 4),
    ]
    for got, want in zip(out["encoder_groups"], expected_en, strict=True):
        torch.testing.assert_close(got, want)
    for got, want in zip(out["decoder_groups"], expected_de, strict=True):
        torch.testing.assert_close(got, want)
    # the bottleneck sees the mean of all eight taps over all tokens, prefix tokens included
    torch.testing.assert_close(out["fused"], torch.stack(taps).mean(0))
    # map: mean over groups of 1 - cos, bilinear align_corners=True to the input
    dist = sum(1 - F.cosine_similarity(e, d, dim=1) for e, d in zip(expected_en, expected_de)) / 2
    expected_map = F.interpolate(dist[:, None], size=(56, 56), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out["anomaly_map"], expected_map)


def test_bad_groups_name_the_key():
    with pytest.raises(ValueError, match="decoder_groups"):
        _small_vit(decoder_groups=[[0, 1, 2, 3], [4, 5, 6, 9]])
    with pytest.raises(ValueError, match="same number of groups"):
        _small_vit(decoder_groups=[[0, 1, 2, 3, 4, 5, 6, 7]])


def test_trainable_parts_get_the_official_init():
    model = _small_vit()
    linears = [
        m for m in [*model.bottleneck.modules(), *model.decoder.modules()] if isinstance(m, torch.nn.Linear)
    ]
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert weights.abs().max() <= 0.03 and 0.008 < weights.std() < 0.012
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)


def test_positional_embedding_is_resampled_as_the_official_dinov2():
    """DINOv2 `interpolate_pos_encoding`: 37 x 37 grid, bicubic, scale (28 + 0.1) / 37, no antialias; then
    [cls (+ its position), 4 registers (no position), patches]."""
    encoder = Encoder("dinov2_vits14_reg", pretrained=False, input_size=392)
    net = encoder.net
    assert net.pos_embed.shape == (1, 37 * 37, 384)  # kept at the native 518 grid
    torch.nn.init.normal_(net.pos_embed)
    patches = torch.randn(2, 28, 28, 384)
    tokens = encoder._pos_embed(patches)
    grid = net.pos_embed.reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    official = F.interpolate(grid, scale_factor=(28.1 / 37, 28.1 / 37), mode="bicubic", antialias=False)
    official = official.permute(0, 2, 3, 1).reshape(1, 784, 384)
    torch.testing.assert_close(tokens[:, 5:], patches.reshape(2, 784, 384) + official)
    torch.testing.assert_close(tokens[:, 0], net.cls_token[:, 0].expand(2, -1))
    torch.testing.assert_close(tokens[:, 1:5], net.reg_token.expand(2, -1, -1))
    # timm's own resampling (size-based, antialiased) gives other values: the choice matters
    from timm.layers import resample_abs_pos_embed

    timm_way = resample_abs_pos_embed(net.pos_embed, (28, 28), (37, 37), num_prefix_tokens=0)
    assert not torch.allclose(timm_way, official, atol=1e-3)
    assert resample_grid_pos_embed(net.pos_embed, (37, 37), 0.1) is net.pos_embed


def test_official_dinov2_weights_file_loads_offline(tmp_path):
    """The official `dinov2_vits14_reg4_pretrain.pth` layout (cls position inside pos_embed, register_tokens,
    mask_token) loads through backbone.weights with no resampling: the model keeps the 37 x 37 grid."""
    torch.manual_seed(0)
    source = timm.create_model("vit_small_patch14_reg4_dinov2", img_size=518, num_classes=0).state_dict()
    cls_pos = torch.randn(1, 1, 384)
    official = {k: v for k, v in source.items() if k not in ("cls_token", "reg_token", "pos_embed")}
    official |= {
        "cls_token": source["cls_token"] - cls_pos,
        "register_tokens": source["reg_token"],
        "pos_embed": torch.cat([cls_pos, source["pos_embed"]], dim=1),  # (1, 1 + 37 * 37, 384)
        "mask_token": torch.zeros(1, 384),
    }
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(official, path)
    encoder = Encoder("dinov2_vits14_reg", pretrained=True, weights=str(path), input_size=392)
    assert encoder.weights_source == str(path)
    loaded = encoder.net.state_dict()
    for key in ("pos_embed", "cls_token", "reg_token", "blocks.9.mlp.fc2.weight"):
        torch.testing.assert_close(loaded[key], source[key])


def test_cnn_variant_splits_the_aligned_stages_into_two_groups():
    torch.manual_seed(0)
    model = Dinomaly(Encoder("effnet_lite0", pretrained=False, input_size=64)).eval()
    assert type(model) is DinomalyCNN and type(copy.deepcopy(model)) is DinomalyCNN
    assert model.decoder[0].attn.num_heads == 3  # 192 channels -> 3 heads of 64
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(images)
        aligned = model.extract(images)["aligned"]  # 16+24+40+112 = 192 channels on the stride-16 grid
    assert aligned.shape == (2, 192, 4, 4) and out["fused"].shape == (2, 16, 192)
    torch.testing.assert_close(out["encoder_groups"][0], aligned[:, :40])
    torch.testing.assert_close(out["encoder_groups"][1], aligned[:, 40:])
    blocks = [b.transpose(1, 2).reshape(2, 192, 4, 4) for b in out["decoder_blocks"]]
    torch.testing.assert_close(out["decoder_groups"][0], (sum(blocks[4:]) / 4)[:, :40])
    torch.testing.assert_close(out["decoder_groups"][1], (sum(blocks[:4]) / 4)[:, 40:])
    assert out["anomaly_map"].shape == (2, 1, 64, 64)


def test_loss_follows_the_mining_schedule_and_trains_only_the_decoder():
    model = _small_vit().train()
    out = model(torch.randn(2, 3, 56, 56))
    losses = model.loss(out)
    assert losses["hm_ratio"].item() == 0.0  # step 0
    assert model.loss(out, step=500)["hm_ratio"].item() == pytest.approx(0.45)  # 0.9 * 500 / 1000
    losses["loss"].backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.trainable_parameters())


def test_bf16_autocast_trains_with_float32_loss_and_map():
    model = _small_vit().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 56, 56))
        loss = model.loss(out)["loss"]
    assert out["decoder_groups"][0].dtype == torch.bfloat16
    assert loss.dtype == out["anomaly_map"].dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.trainable_parameters())


def test_optimiser_from_the_method_config(tmp_path):
    cfg = compose_config(["method=dinomaly", "backbone=dinov2_vits14_reg", "backbone.pretrained=false"])
    with open_dict(cfg):
        cfg.protocol.crop_size = 56
    net = builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))
    # no trainer and an epoch-based config: no horizon, so the optimiser alone
    optimizer = builders.build_module(cfg, net).configure_optimizers()
    assert isinstance(optimizer, StableAdamW)
    assert optimizer.defaults["eps"] == 1e-10 and optimizer.defaults["amsgrad"]
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 15_377_280
    with open_dict(cfg):
        cfg.trainer.max_steps = 50
    scheduler = builders.build_module(cfg, net).configure_optimizers()["lr_scheduler"]
    assert scheduler["interval"] == "step" and scheduler["scheduler"].total_steps == 50


def test_mvtec_recipe_is_the_official_script(tmp_path):
    cfg = compose_config(["experiment=dinomaly_mvtec"], output_dir=tmp_path)
    assert (cfg.method.name, cfg.backbone.name, cfg.dataset.name, cfg.protocol.name) == (
        "dinomaly",
        "dinov2_vitb14_reg",
        "mvtec",
        "dinomaly392",
    )
    assert (cfg.protocol.image_size, cfg.protocol.crop_size, cfg.protocol.eval_size) == (448, 392, 256)
    opt, sched = cfg.method.optimizer, cfg.method.scheduler
    assert (opt.lr, opt.weight_decay, opt.eps, opt.amsgrad, list(opt.betas)) == (
        2e-3,
        1e-4,
        1e-10,
        True,
        [0.9, 0.999],
    )
    assert (sched.total_steps, sched.warmup_steps, sched.final_ratio) == (10000, 100, 0.1)
    assert (cfg.trainer.max_steps, cfg.dataset.batch_size, cfg.method.grad_clip, cfg.seed) == (
        10000,
        16,
        0.1,
        1,
    )
    assert cfg.method.model.dropout == 0.2 and cfg.method.scheduler_interval == "step"


@pytest.mark.parametrize(("dataset", "steps", "dropout"), [("visa", 10000, 0.2), ("realiad", 50000, 0.4)])
def test_visa_and_realiad_recipes(dataset, steps, dropout, tmp_path):
    if not (CONF_DIR / "dataset" / f"{dataset}.yaml").exists():
        pytest.skip(f"conf/dataset/{dataset}.yaml comes with the data issue")
    cfg = compose_config([f"experiment=dinomaly_{dataset}"], output_dir=tmp_path)
    assert (cfg.dataset.name, cfg.trainer.max_steps, cfg.method.model.dropout) == (dataset, steps, dropout)
