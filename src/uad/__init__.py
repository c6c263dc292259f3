"""uad: multi-class unsupervised anomaly detection (UniAD, Dinomaly, DualAD) on Lightning + Hydra."""

__version__ = "0.1.0"
