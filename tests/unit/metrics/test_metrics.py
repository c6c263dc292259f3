"""uad.metrics.functional against the metrics' definitions, evaluated threshold by threshold
(tests/helpers/metric_oracle.py), and scikit-learn; the papers' 200-threshold AUPRO against the official
code."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from bench.reference_metrics import metrics_reference
from bench.synthetic_maps import blob_data
from tests.helpers.metric_oracle import aupro_oracle, metrics_oracle, ranking_oracle
from uad.metrics import aupro, compute_metrics
from uad.metrics.functional import (
    flip_auroc,
    linear_thresholds,
    pixel_metrics,
    ranking_metrics,
    sample_metrics,
)


@pytest.mark.parametrize(
    "seed,heavy,ties", [(0, False, False), (1, True, False), (2, False, True), (3, True, True)]
)
def test_all_seven_metrics_match_their_definitions(seed, heavy, ties):
    scores, labels, maps, masks = blob_data(seed, heavy=heavy, ties=ties)
    ours = compute_metrics(scores, labels, maps, masks)
    ref = metrics_oracle(scores.numpy(), labels.numpy(), maps.numpy(), masks.numpy())
    assert set(ours) == set(ref)
    for name in ref:
        assert ours[name] == pytest.approx(ref[name], abs=1e-6), name
    assert aupro(maps, masks) == ours["AUPRO"]


@pytest.mark.parametrize("seed,heavy,ties", [(15, False, False), (16, True, True)])
def test_the_bench_reference_matches_the_definitions(seed, heavy, ties):
    """bench/bench_metrics.py times uad.metrics against bench/reference_metrics.py: it must be right."""
    data = [t.numpy() for t in blob_data(seed, heavy=heavy, ties=ties)]
    ref, oracle = metrics_reference(*data), metrics_oracle(*data)
    assert ref == pytest.approx(oracle, abs=1e-12)


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_at_other_fpr_limits(limit):
    _, _, maps, masks = blob_data(4, ties=True)
    assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(
        aupro_oracle(maps.numpy(), masks.numpy(), limit), abs=1e-6
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
        ref = ranking_oracle(labels, array.astype(np.float64))
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
    ref = ranking_oracle(sample_labels, sample_scores)
    assert [ours["S-AUROC"], ours["S-AP"], ours["S-F1max"]] == pytest.approx(list(ref), abs=1e-12)


# -- the papers' reporting rules: AUPRO at 200 evenly spaced thresholds, UniAD's AUROC flip ----------

# The official functions' numbers on these cases (blob_data(seed, n=8, size=32, heavy, ties): float32
# maps, masks as int): Dinomaly utils.py compute_pro (guojiajeremy/Dinomaly at commit
# c5c76d01a2bd7212f1c4b7dfdad14902d0f48cfe) and DualAD utils/eval_helper.py cal_pro_score (cyhaan/DualAD at
# 04ce68d4e97397950a3c99d024740e93a04df922), each function taken from its file with `ast` and run unchanged
# in /tmp (numpy 2.4.6, scikit-image 0.26.0, scikit-learn 1.9.1, pandas 3.1.1, whose missing
# DataFrame.append, removed in pandas 2, was given back as a one-row concat).
OFFICIAL_AUPRO_200 = {  # (seed, heavy, ties): (Dinomaly, DualAD)
    (40, False, False): (0.7027794510208764, 0.7027794510208767),
    (41, True, False): (0.01828499549860556, 0.018349606790120064),  # Cauchy tails: the rescales differ
    (42, False, True): (0.5702205043225215, 0.5702205043225216),
    (47, False, False): (0.5746488324518483, 0.5746488324518482),  # float32 rounding: 201 thresholds
}


@pytest.mark.parametrize("case", sorted(OFFICIAL_AUPRO_200))
def test_aupro_at_200_thresholds_matches_the_official_code(case):
    seed, heavy, ties = case
    _, _, maps, masks = blob_data(seed, n=8, size=32, heavy=heavy, ties=ties)
    dinomaly, dualad = OFFICIAL_AUPRO_200[case]
    assert len(linear_thresholds(maps, 200)) == (201 if seed == 47 else 200)
    assert aupro(maps, masks, thresholds=200) == pytest.approx(dinomaly, abs=1e-12)
    assert aupro(maps, masks, thresholds=200, fpr_rescale="minmax") == pytest.approx(dualad, abs=1e-12)


def test_the_200_threshold_aupro_is_reported_beside_the_exact_one():
    scores, labels, maps, masks = blob_data(42, n=8, size=32, ties=True)
    plain = compute_metrics(scores, labels, maps, masks)
    both = compute_metrics(scores, labels, maps, masks, aupro_thresholds=200, aupro_fpr_rescale="minmax")
    assert both == {**plain, "AUPRO@200": pytest.approx(OFFICIAL_AUPRO_200[(42, False, True)][1], abs=1e-12)}
    assert both["AUPRO"] - both["AUPRO@200"] > 0.05  # the approximation is a different number


def test_the_200_threshold_aupro_is_nan_where_undefined_and_refuses_nan_scores():
    _, _, maps, masks = blob_data(43, n=8, size=32)
    with pytest.warns(UserWarning, match="all scores are equal"):
        assert math.isnan(aupro(torch.ones_like(maps), masks, thresholds=200))
    with pytest.warns(UserWarning, match="0 positives"):
        assert math.isnan(aupro(maps, torch.zeros_like(masks), thresholds=200))
    with pytest.raises(ValueError, match="fpr_rescale 'mean'"):
        aupro(maps, masks, thresholds=200, fpr_rescale="mean")
    maps[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="AUPRO@200: 1 scores are NaN"):
        aupro(maps, masks, thresholds=200)


def test_flip_auroc_turns_only_an_auroc_below_half_and_names_it():
    raw = {"I-AUROC": 0.3, "I-AP": 0.2, "P-AUROC": 0.5, "AUPRO": 0.1}
    reported, flipped = flip_auroc(raw)
    assert flipped == ["I-AUROC"] and reported == {**raw, "I-AUROC": pytest.approx(0.7)}
    undefined, flipped = flip_auroc({"I-AUROC": math.nan, "P-AUROC": 0.9})
    assert flipped == [] and math.isnan(undefined["I-AUROC"]) and undefined["P-AUROC"] == 0.9


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
    ref = metrics_oracle(scores.numpy(), labels.numpy(), maps.numpy(), masks.numpy())
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
    assert out["AUPRO"] == pytest.approx(aupro_oracle(maps[-1:].numpy(), masks[-1:].numpy()), abs=1e-6)


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
