"""Exact per-class anomaly-detection metrics, their torchmetrics classes, and the evaluation protocol."""

from uad.metrics.functional import (
    METRIC_NAMES,
    SAMPLE_METRICS,
    aupro,
    aupro_thresholded,
    compute_metrics,
    flip_auroc,
    pixel_metrics,
    ranking_metrics,
    sample_metrics,
)
from uad.metrics.protocol import EvalProtocol
from uad.metrics.stateful import AUPRO, ImageMetrics, PixelMetrics

__all__ = [
    "AUPRO",
    "METRIC_NAMES",
    "SAMPLE_METRICS",
    "EvalProtocol",
    "ImageMetrics",
    "PixelMetrics",
    "aupro",
    "aupro_thresholded",
    "compute_metrics",
    "flip_auroc",
    "pixel_metrics",
    "ranking_metrics",
    "sample_metrics",
]
