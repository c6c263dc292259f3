"""Methods: one network base class (`AnomalyNet`, plain `nn.Module`), then one file per method."""

from uad.methods.base import AnomalyNet, Features, NetOutput

__all__ = ["AnomalyNet", "Features", "NetOutput"]
