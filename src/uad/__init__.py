"""uad: multi-class unsupervised anomaly detection (UniAD, Dinomaly, DualAD) on Lightning + Hydra."""

__version__ = "0.1.0"


def load(path, device=None, threshold=None):  # noqa: ANN001, ANN201 (typed in uad.predict.load)
    """A trained model from a uad checkpoint: `uad.load("last.ckpt").predict("image.png")` (see
    `uad.predict.Model`). Imported on first use, so that `import uad` stays light."""
    from uad.predict import load as _load

    return _load(path, device=device, threshold=threshold)
