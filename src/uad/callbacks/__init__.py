"""Lightning callbacks: evaluation (metrics and results files) and visualisation (imported on first use:
`uad.utils.lazy`)."""

from uad.utils.lazy import lazy_exports

_EXPORTS = {"Evaluator": "uad.callbacks.evaluation"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
