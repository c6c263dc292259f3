"""One LightningDataModule for every dataset: the unified multi-class split by default (one training set
of the normal images of all selected classes; evaluation per class)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from uad.data.dataset import AnomalyDataset, check_images
from uad.data.feature_cache import CachedTrainSet, FeatureCache
from uad.data.readers import Catalog, check_counts, count, open_catalog, select_classes
from uad.data.synthetic import SyntheticSpec, ensure_synthetic
from uad.data.transforms import InputTransform
from uad.utils.logging import get_logger

log = get_logger(__name__)

SETTINGS = ("unified", "separate")
CACHE_WARN_BYTES = 8 * 2**30


def default_num_workers() -> int:
    """Loader processes when the config leaves it open: none on a CPU-only machine, where the model needs
    every core (measured on 2 cores: the default run trains at 4.5 img/s with 0 workers, 2.1 with 2), and
    up to 8 beside a GPU, which would otherwise wait for decoding."""
    if not torch.cuda.is_available():
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def build_augment(entries: Sequence[Mapping[str, Any] | A.BasicTransform] | None) -> A.Compose | None:
    """`dataset.augment`: a list of albumentations transform configs (`_target_` + arguments; Hydra may have
    built them already), applied in order to the training images after the resize; None or empty: no
    augmentation (the papers' recipes)."""
    if not entries:
        return None
    transforms = []
    for i, entry in enumerate(entries):
        if isinstance(entry, (A.BasicTransform, A.BaseCompose)):
            transforms.append(entry)
            continue
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            raise ValueError(
                f"dataset.augment[{i}] is {entry!r}: each entry needs a `_target_`, e.g. "
                f"{{_target_: albumentations.HorizontalFlip, p: 0.5}}"
            )
        try:
            transforms.append(instantiate(dict(entry)))
        except Exception as err:
            raise ValueError(f"dataset.augment[{i}] ({entry['_target_']}) cannot be built: {err}") from err
    return A.Compose(transforms)


class AnomalyDataModule(LightningDataModule):
    """Train on the good images of all `classes` at once; test on every test image, per class.

    reader: which layout reader reads `root` (`uad.data.readers.READERS`: mvtec, mpdd, visa, realiad,
    folder, synthetic); name: the dataset's label in logs (the reader's name when None), so a copy read by
    an existing reader can carry its own; options: the reader's own keys (Real-IAD `images`, `variant`,
    `views`; VisA `split_csv`). setting: "unified" (one model for all classes) or "separate" (the pipeline
    trains one per class). strict: the counts of an official dataset must match the reference (false:
    partial copies).
    image_size, crop_size, resize, interpolation, mask_resize, mask_rule, mask_threshold, label_rule: the
    protocol's input side (see EvalProtocol and `uad.data.transforms`, which documents each paper's steps).
    cache: decode and resize every image once into memory (small sets; shared with worker processes).
    check_images: check at set-up that every image file is whole (cheap: no full decode), so that a broken
    test image is reported before training rather than after it.
    augment: albumentations transform configs for the training images (`build_augment`); null = none.
    num_workers: loader processes; None = `default_num_workers()`.
    """

    def __init__(
        self,
        reader: str = "synthetic",
        root: str | Path = "data/synthetic",
        name: str | None = None,
        classes: Sequence[str] | None = None,
        setting: str = "unified",
        strict: bool = True,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        image_size: int = 224,
        crop_size: int | None = None,
        resize: str = "cv2",
        interpolation: str = "linear",
        mask_resize: str = "cv2_nearest",
        mask_rule: str = "binarize_first",
        mask_threshold: float = 0.5,
        label_rule: str = "folder",
        cache: bool = False,
        check_images: bool = True,
        augment: Sequence[Mapping[str, Any] | A.BasicTransform] | None = None,
        synthetic: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if setting not in SETTINGS:
            raise ValueError(f"dataset.setting '{setting}' is not one of {SETTINGS}")
        self.reader = reader
        self.name = name or reader
        self.options = options
        self.cache = cache
        self.check_images = check_images
        self.root = Path(root).expanduser()
        self.requested_classes = list(classes) if classes else None
        self.setting = setting
        self.strict = strict
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.transform = InputTransform(
            image_size, crop_size, resize, interpolation, mask_resize, mask_rule, mask_threshold
        )
        self.label_rule = label_rule
        self.augment = list(augment or [])
        self.feature_cache: FeatureCache | None = None  # set by uad.builders.attach_feature_cache
        self.synthetic_spec = SyntheticSpec(**(synthetic or {}))
        self.class_names: list[str] = []
        self.train_set: AnomalyDataset | None = None
        self.test_set: AnomalyDataset | None = None

    # -- where the files are ----------------------------------------------------------------------

    @property
    def data_root(self) -> Path:
        """The folder the layout reader reads (for synthetic data, the generated tree)."""
        if self.reader == "synthetic":
            return self.root / self.synthetic_spec.folder_name
        return self.root

    def prepare_data(self) -> None:
        """Generate the synthetic tree on first use (rank 0 only under DDP); reuse it afterwards."""
        if self.reader == "synthetic":
            ensure_synthetic(self.root, self.synthetic_spec)

    def catalog(self) -> Catalog:
        """The classes under the root, each with its (lazy) loader."""
        return open_catalog(self.reader, self.data_root, self.options)

    def discover_classes(self) -> list[str]:
        """The selected classes (all found when dataset.classes is null)."""
        return select_classes(self.catalog(), self.requested_classes, self.data_root)

    # -- Lightning hooks --------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.prepare_data()
        catalog = self.catalog()
        self.class_names = select_classes(catalog, self.requested_classes, self.data_root)
        found = {c: catalog[c]() for c in self.class_names}
        for name, splits in found.items():
            log.info("  %s: %d train / %d good + %d defective test", name, *count(splits))
        check_counts(self.reader, found, self.strict)
        train = [s for c in self.class_names for s in found[c].train]
        test = [s for c in self.class_names for s in found[c].test]
        if self.check_images:
            check_images([*train, *test], threads=max(4, self.num_workers))
        self.train_set = AnomalyDataset(
            train, self.transform, self.class_names, self.label_rule, build_augment(self.augment)
        )
        self.test_set = AnomalyDataset(test, self.transform, self.class_names, self.label_rule)
        log.info(
            "%s: %d classes, %d train / %d test images (%s setting)",
            self.name,
            len(self.class_names),
            len(train),
            len(test),
            self.setting,
        )
        if self.cache:
            self._fill_caches()

    def _fill_caches(self) -> None:
        estimate = (len(self.train_set) + len(self.test_set)) * self.transform.image_size**2 * 4
        if estimate > CACHE_WARN_BYTES:
            log.warning(
                "dataset.cache=true will hold about %.1f GiB in memory; set dataset.cache=false for big sets",
                estimate / 2**30,
            )
        threads = max(1, self.num_workers)
        self.train_set.fill_cache(threads)
        self.test_set.fill_cache(threads)

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int, persistent: bool = True):
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=persistent and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.feature_cache is None:
            return self._loader(self.train_set, True, self.batch_size)
        # fresh workers each epoch, so that they see when the cache is full and stop decoding
        return self._loader(CachedTrainSet(self.train_set, self.feature_cache), True, self.batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
