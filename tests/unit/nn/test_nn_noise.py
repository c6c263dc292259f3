"""uad/nn/noise.py: UniAD's feature jitter and DualAD's spatial noise, training-time perturbations."""

from __future__ import annotations

import torch

from uad.nn.noise import FeatureJitter, SpatialNoise, feature_jitter


def test_jitter_present_in_training_absent_in_eval():
    jitter = FeatureJitter(scale=20.0, prob=1.0)
    x = torch.randn(4, 196, 272)
    jitter.train()
    assert not torch.equal(jitter(x), x)
    jitter.eval()
    assert torch.equal(jitter(x), x)


def test_jitter_probability_zero_is_identity():
    jitter = FeatureJitter(scale=20.0, prob=0.0).train()
    x = torch.randn(2, 10, 8)
    assert torch.equal(jitter(x), x)


def test_jitter_scale_is_norm_over_channels():
    # eps * (||f|| / C) * scale (UniAD models/reconstructions/uniad.py UniAD.add_jitter)
    torch.manual_seed(0)
    c, scale = 272, 20.0
    x = torch.randn(4096, c)
    x[:2048] *= 3.0  # two token norms: the noise must follow each token's own norm
    noise = feature_jitter(x, scale) - x
    expected_std = x.norm(dim=-1) / c * scale  # per token
    measured_std = noise.std(dim=-1)
    ratio = measured_std / expected_std
    assert abs(ratio.mean().item() - 1.0) < 0.01
    # at C = 272, scale 20, the noise norm is about 20 / sqrt(272) = 1.21x the feature norm
    rel = (noise.norm(dim=-1) / x.norm(dim=-1)).mean().item()
    assert abs(rel - scale / c**0.5) < 0.02


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
