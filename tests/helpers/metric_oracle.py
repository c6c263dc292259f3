"""The test oracle: every metric evaluated straight from its definition, threshold by threshold, with
nothing shared with uad.metrics (no sort-and-cumulate, no tie-group bookkeeping).

A threshold t flags the pixels (or images) whose score is >= t; the thresholds are all distinct scores,
so each point of a curve is one threshold. Counting "how many scores are >= t" for every t at once uses
a sorted copy and a binary search, which keeps the oracle fast on the tests' maps (a few 10^4 pixels)
while still being the definition.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def at_least(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold t, how many of `values` are >= t."""
    return len(values) - np.searchsorted(np.sort(values), thresholds, side="left")


def ranking_oracle(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """(AUROC, AP, F1-max) of scores against binary labels, from their definitions.

    AUROC: the chance that a random positive scores above a random negative, a tie counting half.
    AP: sum over thresholds (highest first) of the recall gained times the precision there.
    F1-max: the best 2 TP / (2 TP + FP + FN) over the thresholds."""
    labels = np.ravel(labels).astype(bool)
    scores = np.ravel(scores).astype(np.float64)
    pos, neg = scores[labels], scores[~labels]
    wins = sum(np.count_nonzero(neg < p) + 0.5 * np.count_nonzero(neg == p) for p in pos)
    auroc = float(wins) / (len(pos) * len(neg))
    thresholds = np.unique(scores)[::-1]
    tp, fp = at_least(pos, thresholds), at_least(neg, thresholds)
    recall = tp / len(pos)
    ap = float(np.sum(np.diff(recall, prepend=0.0) * tp / (tp + fp)))
    f1 = float(np.max(2 * tp / (2 * tp + fp + (len(pos) - tp))))
    return auroc, ap, f1


def pro_curve_oracle(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct score, highest threshold first, after the point (0, 0) of a threshold
    above every score. FPR: the fraction of normal pixels (all pixels of good images included) flagged;
    PRO: the mean, over every 8-connected defect region of every image, of the fraction of it flagged."""
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks).astype(bool)
    thresholds = np.unique(maps)[::-1]
    fpr = at_least(maps[~masks], thresholds) / np.count_nonzero(~masks)
    fractions = []
    for image, mask in zip(maps, masks):
        regions, count = ndimage.label(mask, structure=np.ones((3, 3)))
        for r in range(1, count + 1):
            region = image[regions == r]
            fractions.append(at_least(region, thresholds) / region.size)
    pro = np.mean(fractions, axis=0)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro])


def area_to_limit(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Area under the polyline through (x, y) (x non-decreasing) from x = 0 to x = limit, the segment
    crossing the limit cut there with y linearly interpolated."""
    area = 0.0
    for x0, x1, y0, y1 in zip(x[:-1], x[1:], y[:-1], y[1:]):
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area


def aupro_oracle(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under PRO(FPR) for FPR in [0, fpr_limit], divided by fpr_limit."""
    fpr, pro = pro_curve_oracle(maps, masks)
    return area_to_limit(fpr, pro, fpr_limit) / fpr_limit


def metrics_oracle(scores, labels, maps, masks, fpr_limit: float = 0.3) -> dict[str, float]:
    """All seven metrics of one class from the definitions above."""
    image = ranking_oracle(np.asarray(labels), np.asarray(scores))
    pixel = ranking_oracle(np.asarray(masks), np.asarray(maps))
    return {
        **dict(zip(("I-AUROC", "I-AP", "I-F1max"), image)),
        **dict(zip(("P-AUROC", "P-AP", "P-F1max"), pixel)),
        "AUPRO": aupro_oracle(maps, masks, fpr_limit),
    }
