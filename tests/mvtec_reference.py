"""Independent reference implementations the metric tests and bench/bench_metrics.py compare against:
scikit-learn for AUROC / AP / F1-max, and a plain NumPy rendering of the MVTec AD evaluation's AUPRO
(mvtec_ad_evaluation: pro_curve_util.compute_pro + generic_util.trapezoid), written from its description
in shared/reference/data_metrics_frameworks.md §2, not from uad.metrics."""

from __future__ import annotations

from bisect import bisect

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
    )
    return float(f1.max())


def ranking_reference(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """(AUROC, AP, F1-max) as scikit-learn computes them."""
    labels, scores = np.ravel(labels).astype(int), np.ravel(scores)
    return (
        float(roc_auc_score(labels, scores)),
        float(average_precision_score(labels, scores)),
        f1_max(labels, scores),
    )


def pro_curve(anomaly_maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and PRO at every distinct threshold (descending), the MVTec way: per-pixel FP and PRO
    increments, one global argsort, cumulative sums, the last point of each tie group kept."""
    structure = np.ones((3, 3), dtype=int)  # 8-connected regions
    fp_changes = np.zeros(anomaly_maps.shape, dtype=np.uint32)
    pro_changes = np.zeros(anomaly_maps.shape, dtype=np.float64)
    num_regions, num_ok = 0, 0
    for i, mask in enumerate(masks):
        regions, count = label(mask, structure=structure)
        num_regions += count
        ok = regions == 0
        num_ok += int(ok.sum())
        fp_changes[i][ok] = 1
        for r in range(1, count + 1):
            region = regions == r
            pro_changes[i][region] = 1.0 / region.sum()
    scores = anomaly_maps.ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    fprs = np.cumsum(fp_changes.ravel()[order], dtype=np.float64) / num_ok
    pros = np.cumsum(pro_changes.ravel()[order]) / num_regions
    keep = np.append(np.diff(scores) != 0, True)
    fprs, pros = np.clip(fprs[keep], None, 1.0), np.clip(pros[keep], None, 1.0)
    return np.concatenate([[0.0], fprs, [1.0]]), np.concatenate([[0.0], pros, [1.0]])


def trapezoid(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under y(x) from x[0] to x_max; a partial trapezoid to x_max with y interpolated linearly."""
    correction = 0.0
    if x_max not in x:
        ins = bisect(list(x), x_max)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def aupro_reference(anomaly_maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    fprs, pros = pro_curve(np.asarray(anomaly_maps), np.asarray(masks).astype(bool))
    return trapezoid(fprs, pros, fpr_limit) / fpr_limit


def metrics_reference(scores, labels, anomaly_maps, masks, fpr_limit: float = 0.3) -> dict[str, float]:
    """All seven metrics of one class from the reference implementations."""
    image = ranking_reference(np.asarray(labels), np.asarray(scores))
    pixel = ranking_reference(np.asarray(masks).astype(bool), np.asarray(anomaly_maps))
    return {
        "I-AUROC": image[0],
        "I-AP": image[1],
        "I-F1max": image[2],
        "P-AUROC": pixel[0],
        "P-AP": pixel[1],
        "P-F1max": pixel[2],
        "AUPRO": aupro_reference(anomaly_maps, masks, fpr_limit),
    }
