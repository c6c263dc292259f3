"""UniAD (uad/methods/uniad.py) through the real configs: official parity, shapes, training, options (the
end-to-end run: tests/integration/test_method_runs.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import compose_config
from uad import builders, pipeline
from uad.encoders import Encoder, get_spec, list_encoders
from uad.methods.uniad import UniAD
from uad.nn.attention import neighbour_mask


def _official_trainable_count() -> int:
    """Recount of zhiyuanyou/UniAD models/reconstructions/uniad.py with experiments/MVTec-AD/config.yaml
    (inplanes [272], feature_size [14, 14], hidden 256, 8 heads, 4 + 4 layers, FFN 1024, learned pos),
    built from the same torch modules the official classes hold."""

    def count(*modules: nn.Module) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    d, ffn, n = 256, 1024, 14 * 14
    # class TransformerEncoderLayer: self_attn, linear1, linear2, norm1, norm2
    enc_layer = count(
        nn.MultiheadAttention(d, 8), nn.Linear(d, ffn), nn.Linear(ffn, d), *[nn.LayerNorm(d)] * 2
    )
    # class TransformerDecoderLayer: learned_embed, self_attn, multihead_attn, linear1, linear2, norm1-3
    dec_layer = count(
        nn.Embedding(n, d),
        nn.MultiheadAttention(d, 8),
        nn.MultiheadAttention(d, 8),
        nn.Linear(d, ffn),
        nn.Linear(ffn, d),
        *[nn.LayerNorm(d)] * 3,
    )
    # class UniAD: input_proj, output_proj, PositionEmbeddingLearned (row/col nn.Embedding(14, 128));
    # class Transformer: 4 encoder layers (no encoder norm: normalize_before False), 4 decoder layers,
    # decoder_norm
    return (
        count(nn.Linear(272, d), nn.Linear(d, 272), nn.Embedding(14, d // 2), nn.Embedding(14, d // 2))
        + 4 * enc_layer
        + 4 * dec_layer
        + count(nn.LayerNorm(d))
    )


def test_parity_with_the_official_model_at_224(tiny_cfg):
    official = _official_trainable_count()
    assert official == 7_717_392  # methods.md §4.1, measured independently there
    cfg = tiny_cfg(
        "mode=describe",
        "method=uniad",
        "backbone=effb4",
        "backbone.pretrained=false",
        "protocol.image_size=224",
    )
    info = pipeline.run(cfg)
    assert info["trainable_params"] == official
    assert info["per_module"]["transformer_encoder"] == 3_159_040
    assert info["per_module"]["queries"] == 4 * 196 * 256
    assert info["encoder"]["channels"] == [24, 32, 56, 160] and info["encoder"]["strides"] == [2, 4, 8, 16]
    shapes = info["shapes"]
    assert shapes["taps"] == [[1, 24, 112, 112], [1, 32, 56, 56], [1, 56, 28, 28], [1, 160, 14, 14]]
    assert shapes["features"] == {"aligned": [1, 272, 14, 14]}
    assert shapes["aligned"] == shapes["reconstruction"] == [1, 272, 14, 14]
    assert shapes["encoded"] == [1, 196, 256]
    assert shapes["anomaly_map"] == [1, 1, 224, 224]
    # multiply-accumulates of the official reconstruction (same layers as above): projections, then per
    # encoder layer 4 attention projections + QK^T and AV + FFN, per decoder layer twice the attention
    n, d, c, ffn = 196, 256, 272, 1024
    attention = 4 * n * d * d + 2 * n * n * d
    macs = 2 * n * c * d + 4 * (attention + 2 * n * d * ffn) + 4 * (2 * attention + 2 * n * d * ffn)
    assert info["gmacs_trainable"] == pytest.approx(macs / 1e9, rel=1e-6)  # 1.70 G (methods.md §4.2)


def test_protocol_is_the_papers(tiny_cfg):
    protocol = builders.build_protocol(tiny_cfg("method=uniad", "protocol.image_size=224"))
    assert protocol.name == "uniad224" and protocol.score == "avgpool_max" and protocol.score_kernel == 16
    assert protocol.smoothing_sigma == 0.0


def _tiny_model(**kwargs) -> UniAD:
    encoder = Encoder("effnet_lite0", pretrained=False, taps=(0, 1, 2, 3), input_size=96)
    return UniAD(encoder, hidden_dim=32, num_heads=4, ffn_dim=64, neighbor_size=3, **kwargs)


def test_jitter_and_dropout_only_in_training():
    torch.manual_seed(0)
    model = _tiny_model()
    images = torch.randn(2, 3, 96, 96)
    model.eval()
    torch.testing.assert_close(model(images)["anomaly_map"], model(images)["anomaly_map"])
    model.train()
    assert not model.encoder.training and model.jitter.training
    assert not torch.allclose(model(images)["reconstruction"], model(images)["reconstruction"])


def test_the_frozen_encoder_is_not_reinitialised_and_heads_are_xavier():
    torch.manual_seed(0)
    encoder = Encoder("effnet_lite0", pretrained=False, taps=(0, 1, 2, 3), input_size=96)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = UniAD(encoder, hidden_dim=32, num_heads=4, ffn_dim=64, neighbor_size=3)
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert torch.count_nonzero(model.output_proj.bias) == 0
    bound = (6 / (32 + sum(encoder.channels))) ** 0.5  # xavier_uniform
    assert model.output_proj.weight.abs().max() <= bound
    assert 0.8 < model.queries[0].std().item() < 1.2  # N(0, 1) like nn.Embedding


def test_a_blind_neighbourhood_is_refused_naming_the_key(tiny_cfg):
    cfg = tiny_cfg("method=uniad")  # 64 px -> a 4x4 grid, fully inside a 7x7 neighbourhood
    with pytest.raises(Exception, match=r"7x7 neighbourhood hides the whole 4x4.*method.model.neighbor_size"):
        builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))


def test_vit_tokens_are_the_grid(tiny_cfg):
    cfg = tiny_cfg(
        "mode=describe",
        "method=uniad",
        "backbone=vits16_dino",
        "backbone.pretrained=false",
        "protocol.image_size=96",
        "method.model.neighbor_size=3",
    )
    info = pipeline.run(cfg)
    assert info["shapes"]["aligned"] == [1, 384 * len(info["encoder"]["taps"]), 6, 6]
    assert info["shapes"]["anomaly_map"] == [1, 1, 96, 96]


def test_bf16_autocast_and_sine_positions():
    torch.manual_seed(0)
    model = _tiny_model(pos_embed="sine").train()
    images = torch.randn(2, 3, 96, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(images)
        loss = model.loss(outputs)
    loss.backward()
    assert outputs["anomaly_map"].dtype == torch.float32 and torch.isfinite(outputs["anomaly_map"]).all()
    assert torch.isfinite(loss) and model.input_proj.weight.grad is not None


@pytest.mark.parametrize(
    ("experiment", "grid", "neighbourhood", "epochs", "clip"),
    [("uniad_mvtec", 14, 7, 1000, 0.1), ("uniad_ader256", 16, 8, 100, 5.0), ("uniad_visa", 14, 7, 1000, 0.1)],
)
def test_paper_recipes_compose_and_build(experiment, grid, neighbourhood, epochs, clip):
    cfg = compose_config([f"experiment={experiment}", "backbone.pretrained=false"])
    assert cfg.trainer.max_epochs == epochs and cfg.trainer.gradient_clip_val == clip
    assert cfg.method.optimizer.lr == 1e-4 and cfg.dataset.batch_size == 8
    model = builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))
    assert model.grid == (grid, grid) and model.neighbor_size == (neighbourhood, neighbourhood)


def _torch_mha(attn) -> nn.MultiheadAttention:
    """The official layers' nn.MultiheadAttention (sequence-first), holding our attention's weights."""
    dim = attn.q_proj.in_features
    mha = nn.MultiheadAttention(dim, attn.num_heads).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.load_state_dict(attn.out_proj.state_dict())
    return mha


def test_forward_equals_the_official_computation():
    # The forward of zhiyuanyou/UniAD models/reconstructions/uniad.py (UniAD, Transformer,
    # TransformerEncoderLayer.forward_post, TransformerDecoderLayer.forward_post) in eval mode, written
    # sequence-first with torch's nn.MultiheadAttention and the official float mask (-inf = hidden).
    torch.manual_seed(0)
    model = _tiny_model().eval()
    images = torch.randn(2, 3, 96, 96)
    ours = model(images)
    aligned = ours["aligned"]
    b, c, h, w = aligned.shape
    src = model.input_proj(aligned.flatten(2).permute(2, 0, 1))  # (h*w, B, D)
    pos = model.pos_embed()[:, None]  # (h*w, 1, D)
    mask = torch.zeros(h * w, h * w).masked_fill(~neighbour_mask((h, w), 3), float("-inf"))
    out = src
    for layer in model.transformer_encoder.layers:
        attn = _torch_mha(layer.attn)(out + pos, out + pos, out, attn_mask=mask)[0]
        out = layer.norm1(out + attn)
        out = layer.norm2(out + layer.ffn(out))
    memory, out = out, out
    for layer, query in zip(model.transformer_decoder.layers, model.queries):
        tgt = query[:, None].expand(-1, b, -1)
        tgt = layer.norm1(
            tgt + _torch_mha(layer.memory_attn)(tgt + pos, memory + pos, memory, attn_mask=mask)[0]
        )
        tgt = layer.norm2(tgt + _torch_mha(layer.prev_attn)(tgt + pos, out + pos, out, attn_mask=mask)[0])
        out = layer.norm3(tgt + layer.ffn(tgt))
    rec = model.output_proj(model.decoder_norm(out)).permute(1, 2, 0).reshape(b, c, h, w)
    torch.testing.assert_close(ours["reconstruction"], rec, atol=1e-4, rtol=1e-4)
    pred = torch.sqrt(((rec - aligned) ** 2).sum(1, keepdim=True))
    expected = nn.UpsamplingBilinear2d(scale_factor=16)(pred)  # the official map upsampling
    torch.testing.assert_close(ours["anomaly_map"], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backbone", [n for n in list_encoders() if get_spec(n).kind == "cnn"])
def test_every_cnn_backbone_gets_its_taps_and_grid(backbone):
    spec = get_spec(backbone)
    encoder = Encoder(backbone, pretrained=False, taps=UniAD.default_taps(spec), input_size=64)
    model = UniAD(encoder, hidden_dim=32, num_heads=4, ffn_dim=64, neighbor_size=3).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
    assert max(encoder.strides) == 16 and model.grid == (4, 4)
    assert outputs["aligned"].shape == (1, sum(encoder.channels), 4, 4)
    assert outputs["anomaly_map"].shape == (1, 1, 64, 64)
