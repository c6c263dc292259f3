"""uad.metrics.functional against scikit-learn and an independent NumPy MVTec AUPRO (mvtec_reference.py)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.mvtec_reference import aupro_reference, metrics_reference, ranking_reference
from bench.synthetic_maps import blob_data
from uad.metrics import aupro, compute_metrics
from uad.metrics.functional import pixel_metrics, ranking_metrics, sample_metrics


@pytest.mark.parametrize(
    "seed,heavy,ties", [(0, False, False), (1, True, False), (2, False, True), (3, True, True)]
)
def test_all_seven_metrics_match_sklearn_and_the_mvtec_aupro(seed, heavy, ties):
    scores, labels, maps, masks = blob_data(seed, heavy=heavy, ties=ties)
    ours = compute_metrics(scores, labels, maps, masks)
    ref = metrics_reference(scores.numpy(), labels.numpy(), maps.numpy(), masks.numpy())
    assert set(ours) == set(ref)
    for name in ref:
        assert ours[name] == pytest.approx(ref[name], abs=1e-6), name
    assert aupro(maps, masks) == ours["AUPRO"]


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_at_other_fpr_limits(limit):
    _, _, maps, masks = blob_data(4, ties=True)
    assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(
        aupro_reference(maps.numpy(), masks.numpy(), limit), abs=1e-6
    )


def test_scores_are_used_as_given_no_sigmoid_no_flip():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 300)
    scores = (20 + 7 * rng.random(300) - labels).astype(np.float32)  # large values, AUROC < 0.5
    auroc, ap, _ = ranking_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    assert auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12) and auroc < 0.5
    assert ap == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_negative_zero_float16_and_float64_scores_rank_like_sklearn():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 500)
    base = np.round(rng.normal(size=500), 1)
    base[:50] = -0.0
    base[50:100] = 0.0
    for array in (base.astype(np.float16), base.astype(np.float32), base + 1e-12 * rng.random(500)):
        ours = ranking_metrics(torch.from_numpy(array), torch.from_numpy(labels))
        ref = ranking_reference(labels, array.astype(np.float64))
        assert ours == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("heavy", [False, True])
def test_binned_mode_is_within_1e3_of_exact(heavy):
    *_, maps, masks = blob_data(7, n=30, size=64, heavy=heavy)
    exact = pixel_metrics(maps, masks)
    binned = pixel_metrics(maps, masks, bins=4096)
    for name in exact:
        assert binned[name] == pytest.approx(exact[name], abs=1e-3), name
    assert any(binned[n] != exact[n] for n in exact)  # it really is a different (binned) computation


def test_binned_mode_keeps_ties_whole():
    *_, maps, masks = blob_data(8, ties=True)
    exact, binned = pixel_metrics(maps, masks), pixel_metrics(maps, masks, bins=1 << 16)
    for name in exact:  # fewer distinct scores than bins: every tie group is its own bin, so exact
        assert binned[name] == pytest.approx(exact[name], abs=1e-12), name


def test_sample_metrics_take_the_max_over_views():
    rng = np.random.default_rng(9)
    keys = [f"s{i // 5}" for i in range(100)]
    labels = rng.random(100) < 0.2
    scores = rng.random(100) + labels
    ours = sample_metrics(torch.from_numpy(scores), torch.from_numpy(labels), keys)
    sample_scores = scores.reshape(20, 5).max(1)
    sample_labels = labels.reshape(20, 5).max(1)
    ref = ranking_reference(sample_labels, sample_scores)
    assert [ours["S-AUROC"], ours["S-AP"], ours["S-F1max"]] == pytest.approx(list(ref), abs=1e-12)


# -- edge cases: a documented NaN with a warning, or a clear error; never a crash ---------------------


def test_a_class_without_anomalies_gives_nan_and_a_warning():
    scores, labels, maps, masks = blob_data(10)
    good = labels == 0
    with pytest.warns(UserWarning, match="0 positives"):
        out = compute_metrics(scores[good], labels[good], maps[good], masks[good])
    assert all(math.isnan(v) for v in out.values())


def test_all_equal_scores_are_an_uninformative_ranking():
    _, labels, maps, masks = blob_data(11)
    out = compute_metrics(torch.zeros(len(labels)), labels, torch.ones_like(maps), masks)
    prevalence = float(labels.float().mean())
    assert out["I-AUROC"] == 0.5 and out["I-AP"] == pytest.approx(prevalence)
    assert out["P-AUROC"] == 0.5 and out["P-AP"] == pytest.approx(float(masks.float().mean()))
    assert out["AUPRO"] == pytest.approx(0.15, abs=1e-12)  # PRO = FPR on the one segment: 0.3**2 / 2 / 0.3


def test_empty_masks_on_anomalous_images_count_as_background():
    scores, labels, maps, masks = blob_data(12)
    masks[-2:] = False  # anomalous images whose masks are empty
    ours = compute_metrics(scores, labels, maps, masks)
    ref = metrics_reference(scores.numpy(), labels.numpy(), maps.numpy(), masks.numpy())
    assert ours == pytest.approx(ref, abs=1e-6)
    masks[:] = False
    with pytest.warns(UserWarning, match="pixel metrics: 0 positives"):
        out = compute_metrics(scores, labels, maps, masks)
    assert math.isnan(out["AUPRO"]) and not math.isnan(out["I-AUROC"])


def test_a_single_image():
    scores, labels, maps, masks = blob_data(13)
    with pytest.warns(UserWarning, match="image metrics"):
        out = compute_metrics(scores[-1:], labels[-1:], maps[-1:], masks[-1:])
    assert math.isnan(out["I-AUROC"])
    assert out["AUPRO"] == pytest.approx(aupro_reference(maps[-1:].numpy(), masks[-1:].numpy()), abs=1e-6)


def test_nan_scores_and_mismatched_inputs_are_clear_errors():
    scores, labels, maps, masks = blob_data(14)
    maps[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 scores are NaN"):
        compute_metrics(scores, labels, maps, masks)
    with pytest.raises(ValueError, match="lengths differ"):
        compute_metrics(scores[1:], labels, maps, masks)
    with pytest.raises(ValueError, match="must both be"):
        pixel_metrics(maps[:, :10], masks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_metrics(scores, labels, torch.nan_to_num(maps), masks)
