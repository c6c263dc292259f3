"""Dinomaly's loose reconstruction loss and INP-Former's soft mining (uad.nn.losses) against a hand-computed
example."""

from __future__ import annotations

import math

import pytest
import torch

from uad.nn.losses import global_cosine_hm, global_cosine_soft_mining, hard_mining_ratio, scale_gradient

# One image, two channels, a 1 x 4 grid. The encoder is (1, 0) everywhere; the decoder points are
# (1, 0), (1, 1), (0, 1), (-1, 0): point distances 1 - cos = 0, 1 - 1/sqrt2, 1, 2.
EN = torch.tensor([[[[1.0, 1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]]]], dtype=torch.float64)
DE = torch.tensor([[[[1.0, 1.0, 0.0, -1.0]], [[0.0, 1.0, 1.0, 0.0]]]], dtype=torch.float64)


def _hand_gradient() -> torch.Tensor:
    """d/d de of 1 - <a, b> / (|a| |b|) over the flattened maps a = [1,1,1,1,0,0,0,0],
    b = [1,1,0,-1,0,1,1,0]: <a,b> = 1, |a| = 2, |b| = sqrt5, so
    grad = -(a / (2 sqrt5) - b / (2 * 5 sqrt5))."""
    a = EN.flatten()
    b = DE.flatten()
    return (-(a / (2 * math.sqrt(5)) - b * 1 / (2 * 5 * math.sqrt(5)))).reshape(EN.shape)


def test_global_loss_value_is_one_cosine_per_image():
    loss = global_cosine_hm([EN], [DE], ratio=0.5, factor=0.1)
    assert loss.item() == pytest.approx(1 - 1 / (2 * math.sqrt(5)), abs=1e-6)


def test_hard_mining_down_weights_the_easy_points_gradient():
    # ratio 0.5: k = int(4 * 0.5) = 2, threshold = 2nd largest distance = 1; points 0 and 1 (d < 1) are easy
    de = DE.clone().requires_grad_(True)
    global_cosine_hm([EN], [de], ratio=0.5, factor=0.1).backward()
    weight = torch.tensor([0.1, 0.1, 1.0, 1.0], dtype=torch.float64).view(1, 1, 1, 4)
    torch.testing.assert_close(de.grad, _hand_gradient() * weight, rtol=1e-6, atol=1e-9)


def test_ratio_zero_keeps_every_gradient_and_groups_average():
    de = DE.clone().requires_grad_(True)
    loss = global_cosine_hm([EN, EN], [de, DE], ratio=0.0, factor=0.1)
    loss.backward()
    assert loss.item() == pytest.approx((1 - 1 / (2 * math.sqrt(5)) + 0.0 + 1 - 1 / (2 * math.sqrt(5))) / 2)
    torch.testing.assert_close(de.grad, _hand_gradient() / 2, rtol=1e-6, atol=1e-9)


def test_threshold_is_global_over_the_batch():
    # second image: all points perfect (d = 0). With ratio 0.5 over 8 points, k = 4: the threshold is the 4th
    # largest distance = 0 over the batch, so only points with d < 0 would be easy: none, every weight is 1.
    en = torch.cat([EN, EN])
    de = torch.cat([DE, EN]).requires_grad_(True)
    global_cosine_hm([en], [de], ratio=0.5, factor=0.1).backward()
    first = de.grad[0:1]
    torch.testing.assert_close(first, _hand_gradient() / 2, rtol=1e-6, atol=1e-9)


def test_encoder_side_gets_no_gradient():
    en = EN.clone().requires_grad_(True)
    de = DE.clone().requires_grad_(True)
    global_cosine_hm([en], [de], ratio=0.5).backward()
    assert en.grad is None and de.grad is not None


def test_scale_gradient_is_an_exact_identity_forward():
    x = torch.randn(3, 5, requires_grad=True)
    y = scale_gradient(x, torch.full((3, 1), 0.1))
    assert torch.equal(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3, 5), 0.1))


def test_mining_ratio_ramps_linearly_then_holds():
    # official: p = min(0.9 * it / 1000, 0.9)
    assert hard_mining_ratio(0) == 0.0
    assert hard_mining_ratio(500) == pytest.approx(0.45)
    assert hard_mining_ratio(1000) == pytest.approx(0.9)
    assert hard_mining_ratio(7000) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="hard-mining ratio"):
        global_cosine_hm([EN], [DE], ratio=1.0)


def test_soft_mining_keeps_the_value_and_weights_each_gradient_by_its_relative_distance_cubed():
    # distances 0, 1 - 1/sqrt2, 1, 2 (mean 0.8232...): weights (d / mean) ** 3, the hardest point 14.3
    de = DE.clone().requires_grad_(True)
    loss = global_cosine_soft_mining([EN], [de], power=3.0)
    assert loss.item() == pytest.approx(1 - 1 / (2 * math.sqrt(5)), abs=1e-6)
    loss.backward()
    distance = torch.tensor([0.0, 1 - 1 / math.sqrt(2), 1.0, 2.0], dtype=torch.float64)
    weight = ((distance / distance.mean()) ** 3).view(1, 1, 1, 4)
    torch.testing.assert_close(de.grad, _hand_gradient() * weight, rtol=1e-5, atol=1e-7)


def test_soft_mining_power_zero_is_the_plain_global_cosine_gradient():
    de = DE.clone().requires_grad_(True)
    global_cosine_soft_mining([EN, EN], [de, de], power=0.0).backward()
    torch.testing.assert_close(de.grad, _hand_gradient(), rtol=1e-5, atol=1e-7)
