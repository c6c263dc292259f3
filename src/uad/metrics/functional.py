"""Exact ranking metrics for one class, from one descending sort of the scores.

AUROC and AP are what scikit-learn computes (`roc_auc_score`, step-wise `average_precision_score`),
F1-max is the maximum F1 over the same precision-recall points, and AUPRO is the MVTec AD evaluation's
(8-connected regions, one global sort, trapezoid over FPR in [0, limit] with the end point
interpolated, divided by the limit). Scores are used as given: no sigmoid, no min-max scaling, no
flipping of an AUROC below 0.5. Undefined metrics (no positives or no negatives) are NaN, with a warning.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

IMAGE_METRICS = ("I-AUROC", "I-AP", "I-F1max")
PIXEL_METRICS = ("P-AUROC", "P-AP", "P-F1max", "AUPRO")
METRIC_NAMES = IMAGE_METRICS + PIXEL_METRICS


def _tie_ends(sorted_scores: Tensor) -> Tensor:
    """Indices of the last element of each run of equal values in a sorted 1-D tensor."""
    change = torch.nonzero(sorted_scores[1:] != sorted_scores[:-1]).flatten()
    return torch.cat([change, torch.tensor([sorted_scores.numel() - 1], device=sorted_scores.device)])


def _curve_metrics(tps: Tensor, fps: Tensor) -> tuple[float, float, float]:
    """AUROC, AP and F1-max from cumulative true/false positive counts at the tie-group ends."""
    tps, fps = tps.double(), fps.double()
    pos, neg = tps[-1], fps[-1]
    tpr = torch.cat([tps.new_zeros(1), tps / pos])
    fpr = torch.cat([fps.new_zeros(1), fps / neg])
    auroc = torch.trapezoid(tpr, fpr).item()
    precision = tps / (tps + fps)
    recall = tps / pos
    ap = torch.sum(torch.diff(torch.cat([recall.new_zeros(1), recall])) * precision).item()
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(denom))
    return auroc, ap, f1.max().item()


def _undefined(what: str, positives: int, negatives: int) -> bool:
    if positives and negatives:
        return False
    warnings.warn(
        f"{what}: {positives} positives and {negatives} negatives; its metrics are NaN", stacklevel=3
    )
    return True


def ranking_metrics(scores: Tensor, labels: Tensor, what: str = "scores") -> tuple[float, float, float]:
    """(AUROC, AP, F1-max) of `scores` against binary `labels`, both flattened."""
    scores = torch.as_tensor(scores).flatten()
    labels = torch.as_tensor(labels).flatten().bool()
    positives = int(labels.sum())
    if _undefined(what, positives, labels.numel() - positives):
        return math.nan, math.nan, math.nan
    sorted_scores, order = torch.sort(scores, descending=True)
    ends = _tie_ends(sorted_scores)
    tps = torch.cumsum(labels[order], 0, dtype=torch.int64)[ends]
    return _curve_metrics(tps, ends + 1 - tps)


def region_weights(masks: Tensor) -> tuple[Tensor, int]:
    """Per-pixel PRO weights (1 / size of the pixel's 8-connected defect region, 0 on background)
    and the number of regions over all images. masks: (N, H, W) bool."""
    masks_np = masks.cpu().numpy().astype(bool)
    weights = np.zeros(masks_np.shape, dtype=np.float64)
    structure = np.ones((3, 3), dtype=bool)
    regions = 0
    for i, mask in enumerate(masks_np):
        labelled, count = ndimage.label(mask, structure=structure)
        if count:
            sizes = np.bincount(labelled.ravel())
            sizes[0] = 1
            weights[i] = np.where(labelled > 0, 1.0 / sizes[labelled], 0.0)
            regions += count
    return torch.from_numpy(weights), regions


def _integrate_pro(fpr: Tensor, pro: Tensor, fpr_limit: float) -> float:
    """Trapezoid of PRO over FPR in [0, fpr_limit], end point interpolated, divided by fpr_limit."""
    x, y = fpr.numpy(), pro.numpy()
    inside = x <= fpr_limit
    area = float(np.sum(0.5 * (y[inside][1:] + y[inside][:-1]) * np.diff(x[inside])))
    if not np.any(x == fpr_limit):
        i = int(np.searchsorted(x, fpr_limit, side="right"))
        y_end = y[i - 1] + (y[i] - y[i - 1]) * (fpr_limit - x[i - 1]) / (x[i] - x[i - 1])
        area += 0.5 * (y_end + y[i - 1]) * (fpr_limit - x[i - 1])
    return float(area / fpr_limit)


def pixel_metrics(anomaly_maps: Tensor, masks: Tensor, fpr_limit: float = 0.3) -> dict[str, float]:
    """P-AUROC, P-AP, P-F1max and AUPRO of one class from a single sort of all its pixels.

    anomaly_maps: (N, H, W) float; masks: (N, H, W) bool/int. Normal images count as all-background.
    """
    masks = torch.as_tensor(masks).bool()
    scores = torch.as_tensor(anomaly_maps).float().flatten()
    labels = masks.flatten()
    positives = int(labels.sum())
    if _undefined("pixel metrics", positives, labels.numel() - positives):
        return dict.fromkeys(PIXEL_METRICS, math.nan)
    sorted_scores, order = torch.sort(scores, descending=True)
    ends = _tie_ends(sorted_scores)
    labels_sorted = labels[order]
    tps = torch.cumsum(labels_sorted, 0, dtype=torch.int64)[ends]
    fps = ends + 1 - tps
    auroc, ap, f1 = _curve_metrics(tps, fps)

    weights, regions = region_weights(masks)
    pro = torch.cumsum(weights.flatten()[order], 0)[ends] / regions
    fpr = fps.double() / fps[-1]
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    fpr = torch.cat([zero, fpr.clamp(max=1.0), one])
    pro = torch.cat([zero, pro.clamp(max=1.0), one])
    return {"P-AUROC": auroc, "P-AP": ap, "P-F1max": f1, "AUPRO": _integrate_pro(fpr, pro, fpr_limit)}


def aupro(anomaly_maps: Tensor, masks: Tensor, fpr_limit: float = 0.3) -> float:
    """The MVTec AD AUPRO of one class, normalised to [0, 1] by `fpr_limit`."""
    return pixel_metrics(anomaly_maps, masks, fpr_limit)["AUPRO"]


def compute_metrics(
    image_scores: Tensor,
    image_labels: Tensor,
    anomaly_maps: Tensor,
    masks: Tensor,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """All seven metrics of one class as fractions in [0, 1] (NaN where undefined).

    image_scores (N,), image_labels (N,), anomaly_maps (N, H, W) float, masks (N, H, W) bool or int.
    """
    image_scores = torch.as_tensor(image_scores).float().flatten()
    image_labels = torch.as_tensor(image_labels).flatten()
    anomaly_maps = torch.as_tensor(anomaly_maps)
    masks = torch.as_tensor(masks)
    if not (len(image_scores) == len(image_labels) == len(anomaly_maps) == len(masks)):
        raise ValueError(
            f"compute_metrics: lengths differ: {len(image_scores)} scores, {len(image_labels)} labels, "
            f"{len(anomaly_maps)} maps, {len(masks)} masks"
        )
    if anomaly_maps.shape != masks.shape:
        raise ValueError(f"compute_metrics: maps {tuple(anomaly_maps.shape)} vs masks {tuple(masks.shape)}")
    i_auroc, i_ap, i_f1 = ranking_metrics(image_scores, image_labels, what="image metrics")
    return {
        "I-AUROC": i_auroc,
        "I-AP": i_ap,
        "I-F1max": i_f1,
        **pixel_metrics(anomaly_maps, masks, fpr_limit),
    }
