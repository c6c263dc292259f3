"""One LightningDataModule for every dataset: the unified multi-class split by default (one training set
of the normal images of all selected classes; evaluation per class)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from uad.data.dataset import AnomalyDataset
from uad.data.samples import DatasetLayoutError, Sample, discover_mvtec_classes, read_mvtec_split
from uad.data.synthetic import SyntheticSpec, ensure_synthetic
from uad.data.transforms import build_transform
from uad.utils.logging import get_logger

log = get_logger(__name__)

SETTINGS = ("unified", "separate")


class AnomalyDataModule(LightningDataModule):
    """Train on the good images of all `classes` at once; test on every test image, per class.

    name: which dataset reader to use ("synthetic", "mvtec", ...); root: where it lies.
    setting: "unified" (one model for all classes) or "separate" (the pipeline trains one per class).
    image_size, crop_size, interpolation, mask_threshold: the protocol's input side (see EvalProtocol).
    """

    def __init__(
        self,
        name: str = "synthetic",
        root: str | Path = "data/synthetic",
        classes: Sequence[str] | None = None,
        setting: str = "unified",
        strict: bool = True,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        image_size: int = 224,
        crop_size: int | None = None,
        interpolation: str = "linear",
        mask_threshold: float = 0.5,
        synthetic: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if setting not in SETTINGS:
            raise ValueError(f"dataset.setting '{setting}' is not one of {SETTINGS}")
        self.name = name
        self.root = Path(root).expanduser()
        self.requested_classes = list(classes) if classes else None
        self.setting = setting
        self.strict = strict
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.transform = build_transform(image_size, crop_size, interpolation)
        self.mask_threshold = mask_threshold
        self.synthetic_spec = SyntheticSpec(**(synthetic or {}))
        self.class_names: list[str] = []
        self.train_set: AnomalyDataset | None = None
        self.test_set: AnomalyDataset | None = None

    # -- where the files are ----------------------------------------------------------------------

    @property
    def data_root(self) -> Path:
        """The folder the layout reader reads (for synthetic data, the generated tree)."""
        if self.name == "synthetic":
            return self.root / self.synthetic_spec.folder_name
        return self.root

    def prepare_data(self) -> None:
        """Generate the synthetic tree on first use (rank 0 only under DDP); reuse it afterwards."""
        if self.name == "synthetic":
            ensure_synthetic(self.root, self.synthetic_spec)

    def discover_classes(self) -> list[str]:
        available = discover_mvtec_classes(self.data_root)
        if self.requested_classes is None:
            return available
        unknown = [c for c in self.requested_classes if c not in available]
        if unknown:
            raise DatasetLayoutError(
                f"dataset.classes: {unknown} not found under '{self.data_root}'. Available: {available}"
            )
        return list(self.requested_classes)

    def read_split(self, class_name: str, split: str) -> list[Sample]:
        return read_mvtec_split(self.data_root, class_name, split)

    # -- Lightning hooks --------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.prepare_data()
        self.class_names = self.discover_classes()
        train = [s for c in self.class_names for s in self.read_split(c, "train")]
        test = [s for c in self.class_names for s in self.read_split(c, "test")]
        self.train_set = AnomalyDataset(train, self.transform, self.class_names, self.mask_threshold)
        self.test_set = AnomalyDataset(test, self.transform, self.class_names, self.mask_threshold)
        log.info(
            "%s: %d classes, %d train / %d test images (%s setting)",
            self.name,
            len(self.class_names),
            len(train),
            len(test),
            self.setting,
        )

    def _loader(self, dataset: AnomalyDataset, shuffle: bool, batch_size: int, drop_last: bool = False):
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
