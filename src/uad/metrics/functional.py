"""Exact ranking metrics for one class, from one sort of the scores.

AUROC and AP are what scikit-learn computes (`roc_auc_score`, step-wise `average_precision_score`),
F1-max is the maximum F1 over the same precision-recall points, and AUPRO is the MVTec AD evaluation's
(8-connected regions, one global sort, PRO averaged over all regions, trapezoid over FPR in [0, limit]
with the end point interpolated, divided by the limit). Scores are used as given: no sigmoid, no min-max
scaling, no flipping of an AUROC below 0.5. Two papers' reporting rules are here too, for reproducing their
tables only and never in place of the exact numbers: the AUPRO at evenly spaced thresholds of Dinomaly and
DualAD (`aupro_thresholded`, reported as "AUPRO@200") and UniAD's AUROC flip (`flip_auroc`).

Speed: each score becomes an order-preserving 32-bit code, packed with the pixel's region id into one
int64 key, and the keys are sorted in place. That avoids the index permutation (argsort), the slow part
of a sort. Only the tie groups that hold positives (defect pixels) are then visited, found by binary
search: between them every curve is flat, so they determine all the metrics exactly.

NaN rules: a metric that needs positives and negatives is NaN, with a warning, when a class has none of
one kind (no anomalous image, no defect pixel, a single image); AUPRO is NaN when no mask has a region.
All-equal scores are a valid (uninformative) ranking: AUROC 0.5, AP = prevalence. NaN scores are an error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

IMAGE_METRICS = ("I-AUROC", "I-AP", "I-F1max")
PIXEL_METRICS = ("P-AUROC", "P-AP", "P-F1max", "AUPRO")
METRIC_NAMES = IMAGE_METRICS + PIXEL_METRICS
SAMPLE_METRICS = ("S-AUROC", "S-AP", "S-F1max")
AUROC_NAMES = ("I-AUROC", "P-AUROC")
FPR_RESCALES = ("max", "minmax")

_ID_BITS = 31  # region ids below 2**31 share an int64 key with the 32-bit score code
_ID_MASK = (1 << _ID_BITS) - 1
_CHUNK = 1 << 22


def _codes(scores: Tensor) -> Tensor:
    """Order-preserving int32 codes: equal scores share a code, a larger score has a larger code."""
    if scores.dtype == torch.float64:
        return torch.unique(scores, return_inverse=True)[1].int()  # dense ranks: exact for float64
    bits = (scores.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0, which compare equal
    flip = bits >> 31  # all ones for negative floats, whose other bits order backwards
    flip &= 0x7FFFFFFF
    bits ^= flip
    return bits


class _Groups(NamedTuple):
    """The threshold sweep, kept only at the groups of tied scores that hold positives (highest first):
    every other group only moves the curves along flat stretches, so these points determine AUROC, AP,
    F1-max and the PRO curve exactly. Counts are int64, `pro` the float64 sum of positive weights."""

    pos_in: Tensor  # positives in the group
    tp: Tensor  # positives at or above the group
    fp_before: Tensor  # negatives strictly above the group
    fp: Tensor  # negatives at or above the group
    pro: Tensor | None  # sum of the weights of the positives at or above the group
    negatives: int


def _sort(key: Tensor) -> Tensor:
    """int64 keys sorted ascending, in place on the CPU (numpy: no index permutation), torch on a GPU."""
    if key.is_cuda:
        return torch.sort(key).values
    key.numpy().sort()
    return key


def _exact_groups(scores: Tensor, ids: Tensor, weights: Tensor | None) -> _Groups:
    """One sort of (score code, id) keys; the positives' tie groups are then found by binary search."""
    key = _codes(scores).long()  # in place below, in chunks: the keys are the largest array (8 B per pixel)
    key <<= _ID_BITS
    for key_part, id_part in zip(key.split(_CHUNK), ids.split(_CHUNK), strict=True):
        key_part |= id_part
    key = _sort(key)  # (n,) ascending
    n = key.numel()
    chunks = [
        torch.nonzero(part & _ID_MASK).flatten() + i * _CHUNK for i, part in enumerate(key.split(_CHUNK))
    ]
    at = torch.cat(chunks).flip(
        0
    )  # positives' positions, highest score first (chunked: no n-sized temporary)
    pos_key = key[at]
    pos_codes = pos_key >> _ID_BITS
    first = torch.ones_like(pos_codes, dtype=torch.bool)
    first[1:] = pos_codes[1:] != pos_codes[:-1]
    starts = torch.nonzero(first).flatten()  # (G,) where each group starts among the positives
    codes = pos_codes[starts]
    lo = torch.searchsorted(key, codes << _ID_BITS)  # first position of the group's score
    hi = torch.searchsorted(key, (codes + 1) << _ID_BITS)  # one past its last position
    tp = torch.cat([starts[1:], starts.new_tensor([at.numel()])])
    pos_in = tp - starts
    pro = None
    if weights is not None:
        pro = torch.cumsum(weights[pos_key & _ID_MASK], 0)[tp - 1]
    fp_before = (n - hi) - starts
    return _Groups(pos_in, tp, fp_before, fp_before + (hi - lo) - pos_in, pro, n - at.numel())


def quantile_edges(scores: Tensor, positives: Tensor, bins: int, sample: int = 1 << 20) -> Tensor:
    """Rank-space bin edges: half the bins at quantiles of all scores, half at quantiles of the positive
    ones (defects are a small, high-scoring minority, so all-pixel quantiles would lump them together).
    Quantiles come from a strided sample of at most `sample` scores per set; ties never straddle a bin."""
    edges = []
    for values in (scores, scores[positives]):
        if values.numel() == 0:
            continue
        values = values[:: max(1, values.numel() // sample)].float()
        ranked = torch.sort(values).values
        pick = torch.linspace(0, ranked.numel() - 1, max(2, bins // 2), device=values.device).round().long()
        edges.append(ranked[pick])
    return torch.unique(torch.cat(edges))  # sorted ascending


def _binned_groups(scores: Tensor, ids: Tensor, weights: Tensor | None, bins: int) -> _Groups:
    """Scores replaced by their rank-space bin: per-bin counts (no sort), every bin one tie group."""
    positive = ids > 0
    edges = quantile_edges(scores, positive, bins)
    which = torch.bucketize(scores.float(), edges, out_int32=True)  # bin b: edges[b-1] < s <= edges[b]
    size = edges.numel() + 1
    pos = torch.bincount(which[positive], minlength=size)
    neg = torch.bincount(which, minlength=size) - pos
    summed = None
    if weights is not None:
        summed = torch.bincount(which[positive], weights=weights[ids[positive]], minlength=size)
    return histogram_groups(pos, neg, summed)


def histogram_groups(pos: Tensor, neg: Tensor, pro_weights: Tensor | None = None) -> _Groups:
    """The sweep from per-bin counts, bins in ascending score order: positives (B,), negatives (B,) and
    the sum of the positives' PRO weights (B,) in each bin; every bin is one tie group."""
    pos, neg = pos.flip(0), neg.flip(0)  # highest bin first
    held = torch.nonzero(pos).flatten()
    fp_before = (torch.cumsum(neg, 0) - neg)[held]
    pro = None if pro_weights is None else torch.cumsum(pro_weights.flip(0)[held], 0)
    pos_in = pos[held]
    return _Groups(pos_in, torch.cumsum(pos_in, 0), fp_before, fp_before + neg[held], pro, int(neg.sum()))


def _refuse_nan(scores: Tensor, what: str) -> None:
    """NaN has no rank: a ValueError that counts them."""
    if torch.isnan(scores).any():
        raise ValueError(f"{what}: {int(torch.isnan(scores).sum())} scores are NaN; check the anomaly maps")


def _groups(scores: Tensor, ids: Tensor, weights: Tensor | None, bins: int | None, what: str) -> _Groups:
    """The sweep of one class's scores; ids: int < 2**31, 0 = negative; weights[id]: PRO weights."""
    _refuse_nan(scores, what)
    if bins is None:
        return _exact_groups(scores, ids, weights)
    return _binned_groups(scores, ids, weights, bins)


def _curve_metrics(g: _Groups) -> tuple[float, float, float]:
    """AUROC (each positive beats the negatives below it, half credit for ties), step-wise AP and
    F1-max = max 2TP / (TP + FP + P), all at the groups that hold positives."""
    positives, negatives = int(g.tp[-1]), g.negatives
    beaten = 2 * negatives - g.fp_before - g.fp  # twice the negatives below, ties counted half
    auroc = int(torch.sum(g.pos_in * beaten)) / (2 * positives * negatives)
    precision = g.tp.double() / (g.tp + g.fp).double()
    ap = float(torch.sum(g.pos_in.double() * precision)) / positives
    f1 = float(torch.max(2 * g.tp.double() / (g.tp + g.fp + positives).double()))
    return auroc, ap, f1


def _nan(message: str) -> float:
    """An undefined metric: NaN, with the reason as a warning."""
    warnings.warn(message, stacklevel=3)
    return math.nan


def _undefined(what: str, positives: int, negatives: int) -> bool:
    if positives and negatives:
        return False
    _nan(f"{what}: {positives} positives and {negatives} negatives; its metrics are NaN")
    return True


def _checked_pixels(anomaly_maps: Tensor, masks: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Maps and masks as tensors (masks bool), or a ValueError unless both are (N, H, W)."""
    anomaly_maps = torch.as_tensor(anomaly_maps)
    masks = torch.as_tensor(masks).bool()
    if anomaly_maps.shape != masks.shape or anomaly_maps.dim() != 3:
        raise ValueError(
            f"{what}: maps {tuple(anomaly_maps.shape)} and masks {tuple(masks.shape)} must both be (N, H, W)"
        )
    return anomaly_maps, masks


def ranking_metrics(
    scores: Tensor, labels: Tensor, what: str = "scores", bins: int | None = None
) -> tuple[float, float, float]:
    """(AUROC, AP, F1-max) of `scores` against binary `labels`, both flattened; `bins` = binned mode."""
    scores = torch.as_tensor(scores).flatten()
    labels = torch.as_tensor(labels, device=scores.device).flatten().bool()
    positives = int(labels.sum())
    if _undefined(what, positives, labels.numel() - positives):
        return math.nan, math.nan, math.nan
    return _curve_metrics(_groups(scores, labels.int(), None, bins, what))


def region_labels(masks: Tensor) -> tuple[Tensor, Tensor]:
    """8-connected defect regions of each mask, numbered 1..R over all images (0 = background), and
    each region's PRO weight 1 / size (index 0: weight 0).
    masks: (N, H, W) bool -> labels (N, H, W) int32, weights (R + 1,) float64."""
    within_image = np.zeros((3, 3, 3), dtype=bool)
    within_image[1] = True  # 8-connectivity inside an image, none across the stack
    labelled, regions = ndimage.label(masks.cpu().numpy().astype(bool, copy=False), structure=within_image)
    sizes = np.bincount(labelled[labelled > 0], minlength=regions + 1).astype(
        np.float64
    )  # defect pixels only
    weights = np.zeros(regions + 1)
    weights[1:] = 1.0 / sizes[1:]
    return torch.from_numpy(labelled.astype(np.int32, copy=False)), torch.from_numpy(weights)


def _integrate_pro(fpr: Tensor, pro: Tensor, fpr_limit: float) -> float:
    """Trapezoid of PRO over FPR in [0, fpr_limit], end point interpolated, divided by fpr_limit."""
    x, y = fpr.cpu().numpy(), pro.cpu().numpy()
    inside = x <= fpr_limit
    area = float(np.sum(0.5 * (y[inside][1:] + y[inside][:-1]) * np.diff(x[inside])))
    if not np.any(x == fpr_limit):
        i = int(np.searchsorted(x, fpr_limit, side="right"))
        y_end = y[i - 1] + (y[i] - y[i - 1]) * (fpr_limit - x[i - 1]) / (x[i] - x[i - 1])
        area += 0.5 * (y_end + y[i - 1]) * (fpr_limit - x[i - 1])
    return float(area / fpr_limit)


def pixel_metrics(
    anomaly_maps: Tensor, masks: Tensor, fpr_limit: float = 0.3, bins: int | None = None
) -> dict[str, float]:
    """P-AUROC, P-AP, P-F1max and AUPRO of one class from a single sort of all its pixels.

    anomaly_maps: (N, H, W) float; masks: (N, H, W) bool/int. Normal images count as all-background.
    bins: None = exact; an int = rank-space binned mode (memory- and time-bounded, within 1e-3 of exact).
    """
    anomaly_maps, masks = _checked_pixels(anomaly_maps, masks, "pixel metrics")
    positives = int(masks.sum())
    if _undefined("pixel metrics", positives, masks.numel() - positives):
        return dict.fromkeys(PIXEL_METRICS, math.nan)
    labelled, weights = region_labels(masks)
    device = anomaly_maps.device
    regions = weights.numel() - 1
    g = _groups(
        anomaly_maps.flatten(), labelled.flatten().to(device), weights.to(device), bins, "pixel metrics"
    )
    auroc, ap, f1 = _curve_metrics(g)
    fpr, pro = _pro_points(g, regions)
    return {"P-AUROC": auroc, "P-AP": ap, "P-F1max": f1, "AUPRO": _integrate_pro(fpr, pro, fpr_limit)}


def _pro_points(g: _Groups, regions: int) -> tuple[Tensor, Tensor]:
    """The PRO curve's corners (FPR, PRO), from (0, 0) to (1, 1): entering and leaving each group with
    positives; the curve is flat between them."""
    fpr = torch.stack([g.fp_before, g.fp], 1).flatten().double() / g.negatives
    pro_before = torch.cat([g.pro.new_zeros(1), g.pro[:-1]])
    pro = torch.stack([pro_before, g.pro], 1).flatten() / regions
    zero, one = fpr.new_zeros(1), fpr.new_ones(1)
    fpr = torch.cat([zero, fpr.clamp(max=1.0), one, one])
    pro = torch.cat([zero, pro.clamp(max=1.0), pro[-1:].clamp(max=1.0), one])
    return fpr, pro


def pro_curve(anomaly_maps: Tensor, masks: Tensor, bins: int | None = None) -> tuple[Tensor, Tensor] | None:
    """The per-region overlap curve of one class: (FPR, PRO) float64 from (0, 0) to (1, 1), the curve
    AUPRO integrates (exact, or rank-space binned with `bins`); None where it is undefined (no defect
    pixel, or no normal one)."""
    anomaly_maps, masks = _checked_pixels(anomaly_maps, masks, "PRO curve")
    positives = int(masks.sum())
    if not positives or positives == masks.numel():
        return None
    labelled, weights = region_labels(masks)
    g = _groups(
        anomaly_maps.flatten(),
        labelled.flatten().to(anomaly_maps.device),
        weights.to(anomaly_maps.device),
        bins,
        "PRO curve",
    )
    return _pro_points(g, weights.numel() - 1)


def linear_thresholds(anomaly_maps: Tensor, count: int) -> np.ndarray:
    """The papers' thresholds: from the class's lowest score up in steps of (max - min) / count, the
    maximum excluded, computed as their code does (`np.arange` in the maps' precision, at least float32),
    so float rounding can give count + 1 of them. The scores must not all be equal."""
    dtype = torch.float64 if anomaly_maps.dtype == torch.float64 else torch.float32
    low, high = (v.cpu().numpy()[()] for v in torch.aminmax(anomaly_maps.to(dtype)))
    return np.arange(low, high, (high - low) / count)


def aupro_thresholded(
    anomaly_maps: Tensor,
    masks: Tensor,
    thresholds: int = 200,
    fpr_limit: float = 0.3,
    fpr_rescale: str = "max",
) -> float:
    """The AUPRO that Dinomaly and DualAD report (the cflow-ad approximation), not the MVTec one: PRO and
    FPR at `linear_thresholds(maps, thresholds)` (a pixel is flagged when its score is > the threshold;
    regions and the PRO mean as in `pixel_metrics`), only the points with FPR < `fpr_limit` kept, their
    FPRs rescaled to end at 1, the trapezoid under PRO(FPR) through those points. `fpr_rescale`: "max"
    divides the FPRs by their maximum (Dinomaly, utils.py `compute_pro`); "minmax" maps [min, max] to
    [0, 1] (DualAD, utils/eval_helper.py `cal_pro_score`). No (0, 0) point is added. It is what those
    papers' tables hold, so it is reported beside the exact AUPRO when a protocol asks for it, never
    instead of it. NaN with a warning where it is undefined (see `pixel_metrics`; all-equal scores; fewer
    than two points below the limit; no spread of FPR among them)."""
    if fpr_rescale not in FPR_RESCALES:
        raise ValueError(f"fpr_rescale '{fpr_rescale}' is not one of {FPR_RESCALES}")
    anomaly_maps, masks = _checked_pixels(anomaly_maps, masks, f"AUPRO@{thresholds}")
    positives = int(masks.sum())
    if _undefined(f"AUPRO@{thresholds}", positives, masks.numel() - positives):
        return math.nan
    flat = anomaly_maps.flatten()
    _refuse_nan(flat, f"AUPRO@{thresholds}")
    if bool(flat.min() == flat.max()):
        return _nan(f"AUPRO@{thresholds}: all scores are equal, so there are no thresholds between them")
    edges = torch.from_numpy(linear_thresholds(flat, thresholds)).to(flat.device)
    # how many thresholds lie below each score: the pixel is flagged at thresholds 0 .. above - 1
    above = torch.bucketize(flat.to(edges.dtype), edges, out_int32=True)  # (n,)
    labelled, weights = region_labels(masks)
    ids = labelled.flatten().to(flat.device)
    defect = ids > 0
    size = edges.numel() + 1
    negatives = torch.bincount(above[~defect], minlength=size)
    hits = torch.bincount(above[defect], weights=weights.to(flat.device)[ids[defect]], minlength=size)
    # (T,) at threshold j: the pixels with above > j, i.e. suffix sums from j + 1
    fpr = negatives.flip(0).cumsum(0).flip(0)[1:].double() / (masks.numel() - positives)
    pro = hits.flip(0).cumsum(0).flip(0)[1:] / (weights.numel() - 1)
    keep = fpr < fpr_limit  # FPR falls as the threshold rises: the kept points are the last ones
    fpr, pro = fpr[keep], pro[keep]
    low = fpr.min() if fpr_rescale == "minmax" and fpr.numel() else 0.0
    if fpr.numel() < 2 or not bool(fpr.max() > low):
        return _nan(f"AUPRO@{thresholds}: {fpr.numel()} thresholds below FPR {fpr_limit}, not a curve")
    fpr = (fpr - low) / (fpr.max() - low)
    return float(torch.sum((fpr[:-1] - fpr[1:]) * (pro[:-1] + pro[1:]) / 2))


def aupro(
    anomaly_maps: Tensor,
    masks: Tensor,
    fpr_limit: float = 0.3,
    bins: int | None = None,
    thresholds: int | None = None,
    fpr_rescale: str = "max",
) -> float:
    """The MVTec AD AUPRO of one class, normalised to [0, 1] by `fpr_limit`; with `thresholds`, the
    papers' approximation instead (`aupro_thresholded`, which ignores `bins`)."""
    if thresholds is not None:
        return aupro_thresholded(anomaly_maps, masks, thresholds, fpr_limit, fpr_rescale)
    return pixel_metrics(anomaly_maps, masks, fpr_limit, bins)["AUPRO"]


def flip_auroc(metrics: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
    """UniAD's reporting rule (utils/eval_helper.py: `if auc < 0.5: auc = 1 - auc`, image and pixel
    AUROC): the metrics with each AUROC below 0.5 replaced by 1 - AUROC, and the names of those flipped,
    so that whoever reads the number can tell. Only for reproducing that paper's tables."""
    out = dict(metrics)
    flipped = [name for name in AUROC_NAMES if name in out and out[name] < 0.5]
    for name in flipped:
        out[name] = 1.0 - out[name]
    return out, flipped


def compute_metrics(
    image_scores: Tensor,
    image_labels: Tensor,
    anomaly_maps: Tensor,
    masks: Tensor,
    fpr_limit: float = 0.3,
    bins: int | None = None,
    aupro_thresholds: int | None = None,
    aupro_fpr_rescale: str = "max",
) -> dict[str, float]:
    """All seven metrics of one class as fractions in [0, 1] (NaN where undefined).

    image_scores (N,), image_labels (N,), anomaly_maps (N, H, W) float, masks (N, H, W) bool or int.
    bins: None = exact pixel metrics; an int = rank-space binned pixel metrics (image metrics stay exact).
    aupro_thresholds: an int T adds the papers' approximate AUPRO as "AUPRO@T" (`aupro_thresholded`
    with `aupro_fpr_rescale`) beside the exact one.
    """
    image_scores = torch.as_tensor(image_scores).flatten()
    image_labels = torch.as_tensor(image_labels).flatten()
    anomaly_maps = torch.as_tensor(anomaly_maps)
    masks = torch.as_tensor(masks)
    if not (len(image_scores) == len(image_labels) == len(anomaly_maps) == len(masks)):
        raise ValueError(
            f"compute_metrics: lengths differ: {len(image_scores)} scores, {len(image_labels)} labels, "
            f"{len(anomaly_maps)} maps, {len(masks)} masks"
        )
    i_auroc, i_ap, i_f1 = ranking_metrics(image_scores, image_labels, what="image metrics")
    out = {
        "I-AUROC": i_auroc,
        "I-AP": i_ap,
        "I-F1max": i_f1,
        **pixel_metrics(anomaly_maps, masks, fpr_limit, bins),
    }
    if aupro_thresholds is not None:
        out[f"AUPRO@{aupro_thresholds}"] = aupro_thresholded(
            anomaly_maps, masks, aupro_thresholds, fpr_limit, aupro_fpr_rescale
        )
    return out


def sample_metrics(scores: Tensor, labels: Tensor, sample_keys: Sequence[str]) -> dict[str, float]:
    """Real-IAD sample-level S-AUROC, S-AP, S-F1max: a sample's score is the max over its views' image
    scores, its label the max over its views' labels; views share a `sample_key`."""
    scores = torch.as_tensor(scores).flatten().double()
    labels = torch.as_tensor(labels).flatten().long()
    if len(sample_keys) != len(scores):
        raise ValueError(f"sample metrics: {len(sample_keys)} sample keys for {len(scores)} scores")
    names, group = np.unique(np.asarray(sample_keys, dtype=object).astype(str), return_inverse=True)
    group = torch.from_numpy(group.astype(np.int64))
    sample_scores = torch.full((len(names),), -math.inf, dtype=torch.float64)
    sample_scores.scatter_reduce_(0, group, scores, reduce="amax")
    sample_labels = torch.zeros(len(names), dtype=torch.long).scatter_reduce_(0, group, labels, reduce="amax")
    return dict(zip(SAMPLE_METRICS, ranking_metrics(sample_scores, sample_labels, "sample metrics")))
