"""INP-Former: the official parameter counts, what the prototypes see, the loss's two parts, and the recipes
composed from the real configs."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_config
from uad import builders, pipeline
from uad.nn.losses import global_cosine_soft_mining
from uad.nn.prototypes import coherence_loss

# Trainable parameters of the official INP_Former (INP_Former_Multi_Class.py: Mlp(D, 4D, D) bottleneck, one
# Aggregation_Block, 8 Prototype_Blocks, INP (6, D); models/vision_transformer.py), recounted:
#   bottleneck = 8D^2 + 5D
#   extractor  = INP 6D + 2 LayerNorms 4D + q (D^2 + D) + kv (2D^2 + 2D) + proj (D^2 + D) + MLP (8D^2 + 5D)
#              = 12D^2 + 19D
#   block      = 12D^2 + 13D + heads (learn_scale)
# The parity fixtures (tests/fixtures/parity/inpformer*.json) hold the official model's own count.
SIZES = {"dinov2_vits14_reg": (384, 6), "dinov2_vitb14_reg": (768, 12), "dinov2_vitl14_reg": (1024, 16)}


def _counts(dim: int, heads: int) -> dict[str, int]:
    return {
        "extractor": 12 * dim * dim + 19 * dim,
        "bottleneck": 8 * dim * dim + 5 * dim,
        "decoder": 8 * (12 * dim * dim + 13 * dim + heads),
    }


def _net(backbone: str, size: int = 112):
    cfg = compose_config(
        [
            "method=inpformer",
            f"backbone={backbone}",
            "backbone.pretrained=false",
            f"protocol.image_size={size}",
            "protocol.crop_size=null",
        ]
    )
    torch.manual_seed(0)
    return builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))


@pytest.mark.slow  # ViT-S: test_describe_counts_and_shapes
@pytest.mark.parametrize("backbone", ["dinov2_vitb14_reg"])
def test_trainable_parameters_are_the_official_count(backbone):
    counts = _net(backbone).parameter_counts()
    assert counts["per_module"] == _counts(*SIZES[backbone])
    assert counts["trainable_params"] == sum(_counts(*SIZES[backbone]).values())


def test_the_prototypes_see_patch_tokens_only_and_the_loss_has_both_parts():
    net = _net("dinov2_vits14_reg")  # 112 px: an 8 x 8 grid, 1 cls + 4 register tokens
    images = torch.randn(2, 3, 112, 112)
    features = net.extract(images)
    assert features["tokens"].shape == (2, 64, 384)
    assert features["encoder_groups"].shape == (2, 2, 384, 8, 8)
    taps = net.encoder(images)
    patches = torch.stack([t[:, 5:] for t in taps]).mean(0)
    torch.testing.assert_close(features["tokens"], patches, rtol=1e-5, atol=1e-6)
    output = net.reconstruct(features, (112, 112))
    assert output["prototypes"].shape == (2, 6, 384)
    assert output.anomaly_map.shape == (2, 1, 112, 112)
    loss = net.loss(output)
    soft = global_cosine_soft_mining(output["encoder_groups"], output["decoder_groups"], 3.0)
    coherence, _ = coherence_loss(output["tokens"], output["prototypes"])
    assert loss["loss"].item() == pytest.approx(soft.item() + 0.2 * coherence.item(), rel=1e-6)
    loss["loss"].backward()
    assert net.extractor.tokens.grad.abs().sum() > 0  # the coherence and the decoder both reach the INPs
    assert all(p.grad is None for p in net.encoder.parameters())


def test_recipes_follow_the_official_scripts():
    cfg = compose_config(["experiment=inpformer_mvtec", "backbone.pretrained=false"])
    assert cfg.method.name == "inpformer" and cfg.backbone.name == "dinov2_vitb14_reg"
    assert cfg.protocol.name == "inpformer392" and cfg.protocol.mask_threshold == 0.5
    assert (cfg.protocol.image_size, cfg.protocol.crop_size, cfg.protocol.eval_size) == (448, 392, 256)
    assert cfg.method.optimizer.lr == 1e-3 and cfg.method.scheduler.final_ratio == 0.1
    assert (cfg.trainer.max_epochs, cfg.dataset.batch_size, cfg.dataset.drop_last, cfg.seed) == (
        200,
        16,
        True,
        1,
    )
    assert cfg.method.model.num_prototypes == 6 and cfg.method.model.dropout == 0.0
    for name, dataset, setting in [
        ("inpformer_visa", "visa", "unified"),
        ("inpformer_realiad", "realiad", "unified"),
        ("inpformer_mvtec_sep", "mvtec", "separate"),
    ]:
        other = compose_config([f"experiment={name}"])
        assert (other.dataset.name, other.dataset.setting) == (dataset, setting)
        assert other.trainer.max_epochs == 200 and other.method.optimizer.lr == 1e-3


def test_describe_counts_and_shapes(tmp_path):
    """mode=describe runs the network under no_grad with a FLOP counter (its module hooks refuse a view of a
    parameter made without gradients: the INPs are copied per image)."""
    overrides = [
        "mode=describe",
        "method=inpformer",
        "backbone=dinov2_vits14_reg",
        "backbone.pretrained=false",
    ]
    info = pipeline.run(
        compose_config(
            [*overrides, "protocol.image_size=112", "protocol.crop_size=null"], output_dir=tmp_path
        )
    )
    assert info["per_module"] == _counts(*SIZES["dinov2_vits14_reg"])
    assert info["shapes"]["prototypes"] == [1, 6, 384]
