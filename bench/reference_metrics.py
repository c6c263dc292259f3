"""The reference that bench/bench_metrics.py times uad.metrics against, at MVTec size (10^8 pixels):
scikit-learn for AUROC and AP, F1-max from scikit-learn's precision-recall curve, and a plain NumPy
AUPRO that counts pixels per distinct score level (np.unique + bincount) rather than per pixel.
tests/unit/metrics/test_metrics.py checks it against the threshold-by-threshold oracle
(tests/helpers/metric_oracle.py).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """The best F1 over scikit-learn's precision-recall points (0 where precision + recall is 0)."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return float(f1.max())


def aupro_reference(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """MVTec AD AUPRO: per distinct score level (ascending), the normal pixels and the defect pixels'
    region weights (1 / region size) it holds; a threshold at a level flags that level and all above, so
    FPR and PRO are suffix sums, read highest level first. The polyline from (0, 0) is integrated to
    fpr_limit (the crossing segment cut there, PRO interpolated), then divided by fpr_limit."""
    masks = np.asarray(masks).astype(bool)
    eight = np.zeros((3, 3, 3), dtype=bool)
    eight[1] = True  # 8-connected within an image, never across images
    regions, count = ndimage.label(masks, structure=eight)
    weight = np.zeros(count + 1)
    weight[1:] = 1.0 / np.bincount(regions.ravel(), minlength=count + 1)[1:]
    levels, level_of = np.unique(np.asarray(maps).ravel(), return_inverse=True)
    normal = ~masks.ravel()
    normal_per_level = np.bincount(level_of[normal], minlength=len(levels))
    weight_per_level = np.bincount(level_of, weights=weight[regions.ravel()], minlength=len(levels))
    fpr = np.concatenate([[0.0], np.cumsum(normal_per_level[::-1]) / normal.sum()])
    pro = np.concatenate([[0.0], np.cumsum(weight_per_level[::-1]) / count])
    x0, x1, y0, y1 = fpr[:-1], fpr[1:], pro[:-1], pro[1:]
    crossing = (x0 < fpr_limit) & (x1 > fpr_limit)
    cut = np.where(crossing, (fpr_limit - x0) / np.where(crossing, x1 - x0, 1.0), 1.0)
    y1 = np.where(crossing, y0 + (y1 - y0) * cut, y1)
    x1 = np.minimum(x1, fpr_limit)
    inside = x0 < fpr_limit
    return float(np.sum(((x1 - x0) * (y0 + y1) / 2)[inside]) / fpr_limit)


def metrics_reference(scores, labels, maps, masks, fpr_limit: float = 0.3) -> dict[str, float]:
    """All seven metrics of one class from the implementations above."""
    out = {}
    for level, y, s in (("I", np.ravel(labels), np.ravel(scores)), ("P", np.ravel(masks), np.ravel(maps))):
        y = y.astype(int)
        out[f"{level}-AUROC"] = float(roc_auc_score(y, s))
        out[f"{level}-AP"] = float(average_precision_score(y, s))
        out[f"{level}-F1max"] = f1_max(y, s)
    out["AUPRO"] = aupro_reference(maps, masks, fpr_limit)
    return out
