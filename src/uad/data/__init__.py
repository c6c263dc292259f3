"""Data: dataset layouts, the synthetic generator, transforms and the one LightningDataModule (imported on
first use: `uad.utils.lazy`)."""

from uad.utils.lazy import lazy_exports

_EXPORTS = {
    "AnomalyDataModule": "uad.data.datamodule",
    "AnomalyDataset": "uad.data.dataset",
    "READERS": "uad.data.readers",
    "Splits": "uad.data.readers",
    "open_catalog": "uad.data.readers",
    "DatasetLayoutError": "uad.data.samples",
    "Sample": "uad.data.samples",
    "SyntheticSpec": "uad.data.synthetic",
    "ensure_synthetic": "uad.data.synthetic",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
