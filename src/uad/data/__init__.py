"""Data: dataset layouts, the synthetic generator, transforms and the one LightningDataModule."""

from uad.data.datamodule import AnomalyDataModule
from uad.data.dataset import AnomalyDataset
from uad.data.samples import DatasetLayoutError, Sample
from uad.data.synthetic import SyntheticSpec, ensure_synthetic

__all__ = [
    "AnomalyDataModule",
    "AnomalyDataset",
    "DatasetLayoutError",
    "Sample",
    "SyntheticSpec",
    "ensure_synthetic",
]
