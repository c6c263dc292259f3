"""Exact per-class anomaly-detection metrics and the evaluation protocol that feeds them."""

from uad.metrics.functional import METRIC_NAMES, aupro, compute_metrics, pixel_metrics, ranking_metrics
from uad.metrics.protocol import EvalProtocol

__all__ = ["METRIC_NAMES", "EvalProtocol", "aupro", "compute_metrics", "pixel_metrics", "ranking_metrics"]
