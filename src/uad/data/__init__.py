"""Data: dataset layouts, the synthetic generator, transforms and the one LightningDataModule."""

from uad.data.datamodule import AnomalyDataModule
from uad.data.dataset import AnomalyDataset
from uad.data.readers import READERS, Splits, open_catalog
from uad.data.samples import DatasetLayoutError, Sample
from uad.data.synthetic import SyntheticSpec, ensure_synthetic

__all__ = [
    "READERS",
    "AnomalyDataModule",
    "AnomalyDataset",
    "DatasetLayoutError",
    "Sample",
    "Splits",
    "SyntheticSpec",
    "ensure_synthetic",
    "open_catalog",
]
