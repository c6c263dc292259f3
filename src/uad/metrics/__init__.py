"""Exact per-class anomaly-detection metrics, their torchmetrics classes, and the evaluation protocol
(imported on first use: `uad.utils.lazy`)."""

from uad.utils.lazy import lazy_exports

_FUNCTIONAL = (
    "METRIC_NAMES",
    "SAMPLE_METRICS",
    "aupro",
    "aupro_thresholded",
    "compute_metrics",
    "flip_auroc",
    "pixel_metrics",
    "ranking_metrics",
    "sample_metrics",
)
_EXPORTS = {
    **dict.fromkeys(_FUNCTIONAL, "uad.metrics.functional"),
    "EvalProtocol": "uad.metrics.protocol",
    **dict.fromkeys(("AUPRO", "ImageMetrics", "PixelMetrics"), "uad.metrics.stateful"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
