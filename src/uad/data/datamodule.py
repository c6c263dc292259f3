"""One LightningDataModule for every dataset: the unified multi-class split by default (one training set
of the normal images of all selected classes; evaluation per class)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from uad.data.dataset import AnomalyDataset, check_images
from uad.data.feature_cache import CachedTrainLoader, CachedTrainSet, FeatureCache
from uad.data.readers import Catalog, check_counts, count, open_catalog, select_classes
from uad.data.resumable import ResumableLoader
from uad.data.samples import Sample
from uad.data.synthetic import SyntheticSpec, ensure_synthetic
from uad.data.transforms import InputTransform
from uad.errors import ConfigError
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
            raise ConfigError(
                f"dataset.augment[{i}] is {entry!r}: each entry needs a `_target_`, e.g. "
                f"{{_target_: albumentations.HorizontalFlip, p: 0.5}}"
            )
        try:
            transforms.append(instantiate(dict(entry)))
        except Exception as err:
            raise ConfigError(f"dataset.augment[{i}] ({entry['_target_']}) cannot be built: {err}") from err
    return A.Compose(transforms)


class AnomalyDataModule(LightningDataModule):
    """Train on the good images of all `classes` at once; test on every test image, per class.

    reader: which layout reader reads `root` (`uad.data.readers.READERS`: mvtec, mpdd, visa, realiad,
    folder, synthetic); name: the dataset's label in logs (the reader's name when None), so a copy read by
    an existing reader can carry its own; options: the reader's own keys (Real-IAD `images`, `variant`,
    `views`; VisA `split_csv`). setting: "unified" (one model for all classes) or "separate" (the pipeline
    trains one per class). strict: the counts of an official dataset must match the reference (false:
    partial copies).
    protocol: the run's protocol config (`dataset.protocol: ${protocol}`; a flat mapping): the data module
    reads its input pipeline from it (`InputTransform.from_protocol`; `uad.data.transforms` documents each
    paper's steps), so it has no input size of its own.
    cache: decode and resize every image once into memory (small sets; shared with worker processes).
    check_images: check at set-up that every image file is whole (cheap: no full decode), so that a broken
    test image is reported before training rather than after it.
    val_fraction: the fraction of each class's training images held back, never trained on, to calibrate
    the decision thresholds (`uad.thresholds`); a deterministic pick (seeded by the class name), 0 = none.
    The configs default to 0.1; the paper recipes set 0 to train on every training image, as the papers.
    augment: albumentations transform configs for the training images (`build_augment`); null = none.
    num_workers: loader processes; None = `default_num_workers()`.
    """

    def __init__(
        self,
        protocol: Mapping[str, Any],
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
        cache: bool = False,
        check_images: bool = True,
        val_fraction: float = 0.0,
        augment: Sequence[Mapping[str, Any] | A.BasicTransform] | None = None,
        synthetic: dict[str, Any] | None = None,
        drop_last: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        self.drop_last = drop_last  # Dinomaly's official loader drops the last incomplete training batch
        if setting not in SETTINGS:
            raise ConfigError(f"dataset.setting '{setting}' is not one of {SETTINGS}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(
                f"dataset.val_fraction must be in [0, 1) (0 = train on every image); got {val_fraction}"
            )
        self.val_fraction = val_fraction
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
        self.transform = InputTransform.from_protocol(protocol)
        self.augment = list(augment or [])
        self.feature_cache: FeatureCache | None = None  # set by uad.builders.attach_feature_cache
        self.synthetic_spec = SyntheticSpec(**(synthetic or {}))
        self.class_names: list[str] = []
        self.train_set: AnomalyDataset | None = None
        self.test_set: AnomalyDataset | None = None
        self.heldout_set: AnomalyDataset | None = None  # held-back normal images (val_fraction)

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
        train, heldout = [], []
        for c in self.class_names:
            kept, held = hold_back(found[c].train, self.val_fraction, c)
            train += kept
            heldout += held
        test = [s for c in self.class_names for s in found[c].test]
        if self.check_images:
            check_images([*train, *heldout, *test], threads=max(4, self.num_workers))
        self.train_set = AnomalyDataset(train, self.transform, self.class_names, build_augment(self.augment))
        self.heldout_set = AnomalyDataset(heldout, self.transform, self.class_names)
        if heldout:
            log.info(
                "held back %d normal training images for calibration (dataset.val_fraction)", len(heldout)
            )
        self.test_set = AnomalyDataset(test, self.transform, self.class_names)
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

    def labelled_set(self, root: str | Path) -> AnomalyDataset:
        """The test split (good and defective images, masks) of the trained classes in another tree of this
        dataset's layout: a labelled validation set (`calibration.rule=f1max`)."""
        catalog = open_catalog(self.name, Path(root).expanduser(), self.options)
        names = [c for c in self.class_names if c in catalog]
        if not names:
            raise ConfigError(
                f"calibration.root '{root}' holds none of the trained classes {self.class_names}; give a "
                f"folder in the {self.name} layout (<class>/test/<good|defect>/..., <class>/ground_truth/...)"
            )
        samples = [s for c in names for s in catalog[c]().test]
        return AnomalyDataset(samples, self.transform, self.class_names)

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

    def _loader(
        self,
        dataset: Dataset,
        shuffle: bool,
        batch_size: int,
        drop_last: bool = False,
        persistent: bool = True,
        cls: type[DataLoader] = DataLoader,
    ):
        return cls(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=persistent and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        drop_last = self.drop_last
        if self.feature_cache is None:
            return self._loader(self.train_set, True, self.batch_size, drop_last, cls=ResumableLoader)
        # no persistent workers: they would not see the cache fill; once full, epochs run in-process
        cached = CachedTrainSet(self.train_set, self.feature_cache)
        return self._loader(cached, True, self.batch_size, drop_last, persistent=False, cls=CachedTrainLoader)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def loader(self, dataset: AnomalyDataset) -> DataLoader:
        """An evaluation loader over any of this module's data sets (calibration)."""
        return self._loader(dataset, False, self.eval_batch_size)


def hold_back(samples: Sequence[Sample], fraction: float, seed: str) -> tuple[list[Sample], list[Sample]]:
    """(kept, held back): round(fraction x n) samples (at least one when fraction > 0, never all) picked by
    a generator seeded with `seed` (the class name), so the split depends on neither the run's seed nor
    the order classes are read in."""
    samples = list(samples)
    count = min(len(samples) - 1, max(1, round(fraction * len(samples)))) if fraction > 0 else 0
    if count <= 0:
        return samples, []
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    held = set(rng.permutation(len(samples))[:count].tolist())
    return [s for i, s in enumerate(samples) if i not in held], [
        s for i, s in enumerate(samples) if i in held
    ]
