"""Methods: one shared base module (`AnomalyModel`), then one file per method."""

from uad.methods.base import AnomalyModel

__all__ = ["AnomalyModel"]
