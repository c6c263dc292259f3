"""Lightning callbacks: evaluation (metrics and results files) and visualisation."""

from uad.callbacks.evaluation import Evaluator

__all__ = ["Evaluator"]
