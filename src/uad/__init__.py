"""uad: multi-class unsupervised anomaly detection (UniAD, Dinomaly, DualAD) on Lightning + Hydra."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uad.predict import Model

__version__ = "0.1.0"


def load(path: str | Path, device: str | None = None, threshold: float | None = None) -> Model:
    """A trained model from a uad checkpoint: `uad.load("last.ckpt").predict("image.png")` (see
    `uad.predict.Model`). Imported on first use, so that `import uad` stays light."""
    from uad.predict import load as load_model

    return load_model(path, device=device, threshold=threshold)
