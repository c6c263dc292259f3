"""PatchCore against brute force written from the paper's definitions: 3x3 neighbourhood aggregation,
greedy k-center coreset, nearest-neighbour distance to the image's own class bank; and the one-pass fit
through the Lightning module (through the pipeline: tests/integration/test_method_runs.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from tests.conftest import compose_config
from uad import builders
from uad.methods.patchcore import (
    PatchCore,
    greedy_coreset,
    nearest_neighbours,
    patch_features,
    reweighted_score,
)


def _naive_coreset(points: torch.Tensor, count: int, start: int) -> list[int]:
    """k-center greedy, one Python loop per pick and per point."""
    chosen = [start]
    while len(chosen) < count:
        gaps = [min(float(torch.dist(p, points[c])) for c in chosen) for p in points]
        chosen.append(max(range(len(points)), key=lambda i: gaps[i]))
    return chosen


def _naive_nearest(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Every query against every bank row by explicit differences (cdist's matmul form differs by ~1e-5)."""
    return (queries[:, None] - bank[None]).pow(2).sum(-1).sqrt().amin(1)


def test_patch_features_average_each_3x3_neighbourhood_then_align_the_levels():
    torch.manual_seed(0)
    fine, coarse = torch.randn(1, 2, 6, 6), torch.randn(1, 3, 3, 3)
    out = patch_features([fine, coarse])
    assert out.shape == (1, 5, 6, 6)
    # an inner position: the plain mean of its 3x3 window; a corner: the 2x2 that exists over 9, the
    # window's missing cells counting as zeros (the official code unfolds zero-padded maps; anomalib pools so)
    torch.testing.assert_close(out[0, :2, 2, 3], fine[0, :, 1:4, 2:5].mean((1, 2)))
    torch.testing.assert_close(out[0, :2, 0, 0], fine[0, :, 0:2, 0:2].sum((1, 2)) / 9)
    coarse_avg = torch.stack(
        [
            coarse[0, :, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].sum((1, 2)) / 9
            for i in range(3)
            for j in range(3)
        ],
        1,
    ).view(1, 3, 3, 3)
    torch.testing.assert_close(out[:, 2:], F.interpolate(coarse_avg, size=(6, 6), mode="bilinear"))
    pooled = patch_features([fine, coarse], feature_dim=1)  # channel average pooling to one value
    torch.testing.assert_close(pooled[:, 0], out.mean(1))


def test_greedy_coreset_equals_the_naive_k_center_greedy():
    torch.manual_seed(0)
    points = torch.randn(60, 5)
    chosen = greedy_coreset(points, 12, projection_dim=None, seed=3)
    assert chosen.tolist() == _naive_coreset(points, 12, int(chosen[0]))
    projected = greedy_coreset(torch.randn(200, 64), 20, projection_dim=8)
    assert len(projected.unique()) == 20
    assert greedy_coreset(points, 100).tolist() == list(range(60))  # a ratio of 1 keeps every feature


def test_nearest_neighbours_equal_brute_force():
    torch.manual_seed(0)
    queries, bank = torch.randn(50, 8), torch.randn(30, 8)
    naive = [min(range(len(bank)), key=lambda j: float(torch.dist(q, bank[j]))) for q in queries]
    distances, index = nearest_neighbours(queries, bank)
    assert index.tolist() == naive
    torch.testing.assert_close(
        distances, torch.stack([torch.dist(q, bank[j]) for q, j in zip(queries, naive)])
    )


def test_image_score_is_the_papers_reweighted_largest_distance():
    """Eq. 7 of the paper, term by term: s* the largest nearest-neighbour distance, m* that patch's nearest
    bank feature, N_b(m*) the b bank features nearest to m*."""
    torch.manual_seed(3)
    bank, queries = torch.randn(40, 6), torch.randn(2, 12, 6)
    distances, nearest = nearest_neighbours(queries.flatten(0, 1), bank)
    scores = reweighted_score(queries, distances.view(2, 12), nearest.view(2, 12), bank, 5)
    for i in range(2):
        star = max(range(12), key=lambda p: float(torch.cdist(queries[i, p][None], bank).min()))
        m_test = queries[i, star]
        m_star = bank[int(torch.cdist(m_test[None], bank).argmin())]
        s_star = torch.dist(m_test, m_star)
        support = sorted(range(40), key=lambda j: float(torch.dist(m_star, bank[j])))[:5]
        total = sum(torch.exp(torch.dist(m_test, bank[j])) for j in support)
        assert float(scores[i]) == pytest.approx(float((1 - torch.exp(s_star) / total) * s_star), rel=1e-5)


def _net(**kwargs) -> PatchCore:
    cfg = compose_config(["method=patchcore", "backbone.pretrained=false", "protocol.image_size=64"])
    torch.manual_seed(0)
    encoder = builders.build_encoder(cfg, builders.build_protocol(cfg))
    return PatchCore(encoder, **kwargs).eval()


def test_each_image_is_scored_against_its_own_class_bank():
    net = _net(coreset_ratio=1.0, blur_sigma=0.0)
    torch.manual_seed(1)
    train, class_id = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        net.fit(net.extract(train), class_id)
        patches = net.extract(train)["patches"].permute(0, 2, 3, 1)  # (4, h, w, D)
        test = torch.randn(2, 3, 64, 64)
        output = net(test, torch.tensor([1, 0]))
        unknown = net(test)
    queries = net.extract(test)["patches"].permute(0, 2, 3, 1).flatten(1, 2)  # (2, h*w, D)
    banks = {c: patches[class_id == c].flatten(0, 2) for c in (0, 1)}
    h, w = output["patch_map"].shape[-2:]
    torch.testing.assert_close(
        output["patch_map"].flatten(1),
        torch.stack([_naive_nearest(queries[0], banks[1]), _naive_nearest(queries[1], banks[0])])
        .view(2, 1, h, w)
        .flatten(1),
        rtol=1e-5,
        atol=1e-4,
    )
    everything = torch.cat([banks[0], banks[1]])
    torch.testing.assert_close(
        unknown["patch_map"][0, 0].flatten(), _naive_nearest(queries[0], everything), rtol=1e-5, atol=1e-4
    )
    assert output.anomaly_map.shape == (2, 1, 64, 64)


def test_the_map_is_the_upsampled_patch_map_blurred_with_sigma_4():
    net = _net(coreset_ratio=0.5)
    with torch.no_grad():
        net.fit(net.extract(torch.randn(2, 3, 64, 64)), torch.tensor([0, 0]))
        output = net(torch.randn(1, 3, 64, 64), torch.tensor([0]))
    assert len(net.bank) == round(0.5 * 2 * output["patch_map"][0, 0].numel())
    upsampled = F.interpolate(output["patch_map"], size=(64, 64), mode="bilinear")
    # the official RescaleSegmentor: scipy's gaussian_filter, sigma 4, its defaults (radius 16, mirror
    # padding that repeats the edge)
    expected = ndimage.gaussian_filter(upsampled[0, 0].double().numpy(), sigma=4)
    torch.testing.assert_close(output.anomaly_map[0, 0], torch.from_numpy(expected).float())
