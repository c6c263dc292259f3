"""Frozen-feature cache: the encoder is frozen and no paper recipe augments its training images, so every
epoch after the first would decode the same images and recompute the same features. The cache keeps, per
training image, exactly what the trainable part consumes (`AnomalyNet.extract`, a `Features` dict), filled
during the first epoch; afterwards the training loader yields dataset indices only (`CachedTrainSet`) and
the module reads the features back. The methods' noise and jitter live in `reconstruct` and stay on the fly.

Storage: `memory` (CPU tensors; falls back to `disk` when the cache would exceed `ram_budget_gb`) or `disk`
(one memory-mapped file per feature in a temporary folder, removed when the cache is closed). A cache lives
for one run: it is never reused across runs (the features depend on the weights and the input pipeline).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from uad.data.resumable import ResumableLoader
from uad.errors import ConfigError
from uad.utils.logging import get_logger

log = get_logger(__name__)

MODES = ("memory", "disk")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

Features = dict[str, Tensor]  # as uad.methods.base.Features (not imported: the data package stays model-free)


class FeatureCache:
    """Per-image `Features` of one training set, filled batch by batch (`store`), read back by index (`load`).

    mode: `memory` or `disk`; dtype: `float32` (exact) or `bfloat16` (half the bytes); ram_budget_gb: a
    `memory` cache larger than this goes to disk instead (logged); dir: where a disk cache's temporary folder
    is made (None: the system's temporary folder). `size` (the number of training images) is set by the
    data module before the first store.
    """

    def __init__(
        self,
        mode: str = "memory",
        dtype: str = "float32",
        ram_budget_gb: float = 8.0,
        dir: str | Path | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"feature_cache.mode '{mode}' is not one of {MODES} (none: feature_cache=none)")
        if dtype not in DTYPES:
            raise ConfigError(f"feature_cache.dtype '{dtype}' is not one of {sorted(DTYPES)}")
        self.mode = mode
        self.dtype = DTYPES[dtype]
        self.ram_budget_bytes = int(ram_budget_gb * 2**30)
        self.dir = dir
        self.size = 0
        self.storage = ""  # "memory" or "disk" once allocated
        self.tensors: dict[str, Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}  # each feature's dtype as extracted, restored on load
        self.image_size: tuple[int, int] | None = None
        self.filled: Tensor | None = None  # (size,) bool
        self.count = 0
        self.fill_seconds = 0.0
        self.summary: dict[str, Any] = {}  # `stats` as they were when the cache was last closed
        self._folder: Path | None = None
        self._cleanup: weakref.finalize | None = None
        self._extract: tuple[Callable[[Tensor], Features], torch.device, int] | None = None  # fill_missing

    # -- state --------------------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """Every training image has its features: the loader can stop decoding."""
        return self.size > 0 and self.count == self.size

    @property
    def bytes_per_image(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self.tensors.values())

    @property
    def stats(self) -> dict[str, Any]:
        """What results.json records under run.feature_cache."""
        return {
            "storage": self.storage,
            "dtype": str(self.dtype).removeprefix("torch."),
            "images": self.count,
            "bytes_per_image": self.bytes_per_image,
            "mib": self.bytes_per_image * self.size / 2**20,
            "fill_seconds": self.fill_seconds,
        }

    def bind(self, size: int) -> None:
        """Size the cache for a training set of `size` images (a new size empties it)."""
        if size != self.size:
            self.close()
            self.size = size

    # -- filling and reading ------------------------------------------------------------------------

    def features(self, batch: dict[str, Any], extract: Callable[[Tensor], Features]) -> Features:
        """The batch's features: from the cache when the loader sent indices only, else extracted from its
        images (under no_grad) and stored."""
        index = batch["index"]
        if "image" not in batch:
            return self.load(index, index.device)
        start = time.perf_counter()
        with torch.no_grad():
            features = extract(batch["image"])
        self.store(index, features, tuple(batch["image"].shape[-2:]))
        self.fill_seconds += time.perf_counter() - start
        self._extract = (extract, batch["image"].device, len(index))
        self._log_if_full()
        return features

    def fill_missing(self, dataset: Dataset) -> None:
        """Extract the images an epoch left out (a loader that drops its last incomplete batch sees a
        different few each epoch, so the cache would stay short of full and every batch of the next epochs
        would be decoded and encoded again): the same frozen `extract` the training step used, on the
        same device, in batches of the size it saw. Reads no random numbers."""
        if self.full or self._extract is None:
            return
        extract, device, batch_size = self._extract
        start = time.perf_counter()
        missing = (~self.filled).nonzero().flatten()
        for rows in missing.split(batch_size):
            images = torch.stack([dataset[int(i)]["image"] for i in rows]).to(device)  # (B, 3, H, W)
            with torch.no_grad():
                self.store(rows, extract(images), tuple(images.shape[-2:]))
        self.fill_seconds += time.perf_counter() - start
        log.info("feature cache: %d images the first epoch left out extracted", len(missing))
        self._log_if_full()

    def _log_if_full(self) -> None:
        if self.full:
            log.info(
                "feature cache full: %d images, %.1f MiB (%s, %s, %d bytes/image), encoder + store %.1f s",
                self.count,
                self.stats["mib"],
                self.storage,
                self.stats["dtype"],
                self.bytes_per_image,
                self.fill_seconds,
            )

    def store(self, index: Tensor, features: Features, image_size: tuple[int, int]) -> None:
        """Keep `features` (each (B, ...)) for the dataset indices `index` (B,)."""
        if self.size <= 0:
            raise RuntimeError("FeatureCache.bind(size) must come before store (the data module calls it)")
        if not self.tensors:
            self._allocate(features, image_size)
        rows = index.cpu()
        for name, value in features.items():
            self.tensors[name][rows] = value.detach().to("cpu", self.dtype)
        self.count += int((~self.filled[rows]).sum())
        self.filled[rows] = True

    def load(self, index: Tensor, device: torch.device) -> Features:
        """The stored features of the dataset indices `index` (B,), on `device`, in their extracted dtype."""
        if not self.full:
            raise RuntimeError("the feature cache is read before it is full (a loader skipped images early)")
        rows = index.cpu()
        return {
            name: value[rows].to(device, self.dtypes[name], non_blocking=True)
            for name, value in self.tensors.items()
        }

    def _allocate(self, features: Features, image_size: tuple[int, int]) -> None:
        self.image_size = image_size
        self.dtypes = {name: value.dtype for name, value in features.items()}
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        total = sum(value[0].numel() for value in features.values()) * itemsize * self.size
        self.storage = self.mode
        if self.mode == "memory" and total > self.ram_budget_bytes:
            log.warning(
                "feature cache: %.1f GiB exceeds feature_cache.ram_budget_gb=%.1f; using a disk memmap",
                total / 2**30,
                self.ram_budget_bytes / 2**30,
            )
            self.storage = "disk"
        if self.storage == "disk":
            self._folder = Path(tempfile.mkdtemp(prefix="uad-feature-cache-", dir=self.dir))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
        for name, value in features.items():
            shape = (self.size, *value.shape[1:])
            if self.storage == "disk":
                path = str(self._folder / f"{name}.bin")
                numel = shape[0] * value[0].numel()
                mapped = torch.from_file(path, shared=True, size=numel, dtype=self.dtype)
                self.tensors[name] = mapped.view(shape)
            else:
                pinned = torch.cuda.is_available()  # `load`'s non-blocking copies then overlap
                self.tensors[name] = torch.empty(shape, dtype=self.dtype, pin_memory=pinned)
        self.filled = torch.zeros(self.size, dtype=torch.bool)
        log.info(
            "feature cache: %d images x %s, %.1f MiB (%s, %s)%s",
            self.size,
            {name: tuple(value.shape[1:]) for name, value in features.items()},
            total / 2**20,
            self.storage,
            self.stats["dtype"],
            f" in {self._folder}" if self._folder else "",
        )

    def close(self) -> None:
        """Drop the stored features (and a disk cache's folder), keeping their `stats` in `summary`."""
        if self.tensors:
            self.summary = self.stats
        self.tensors, self.filled, self.count, self.storage = {}, None, 0, ""
        self._extract = None
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = self._folder = None

    def __getstate__(self) -> dict[str, Any]:
        """What a loader worker needs (is the cache full?), without the stored tensors."""
        return {**self.__dict__, "tensors": {}, "filled": None, "_cleanup": None, "_extract": None}


class CachedTrainSet(Dataset):
    """The training set in front of a feature cache: items with their image until the cache is full, then
    only `{"index": i}` (no decoding). Loaders over it must not keep persistent workers, so that each epoch's
    workers see whether the cache is full."""

    def __init__(self, dataset: Dataset, cache: FeatureCache) -> None:
        self.dataset = dataset
        self.cache = cache
        cache.bind(len(dataset))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"index": index} if self.cache.full else self.dataset[index]


class CachedTrainLoader(ResumableLoader):
    """The training loader over a `CachedTrainSet` (resumable mid-epoch: `uad.data.resumable`): its workers
    decode and encode the first epoch; once the cache is full an epoch yields indices only, so it runs in
    this process and starts no workers (their start-up would be all the loader's cost). The same batch
    sampler draws the order, and a one-process iterator draws the same random numbers as a multi-process
    one, so the batches are those a loader with workers would give. With `drop_last`, the few images the
    first epoch dropped are extracted before the second (`FeatureCache.fill_missing`)."""

    def __iter__(self):
        self.dataset.cache.fill_missing(self.dataset.dataset)  # after an epoch that dropped a few images
        if self.num_workers == 0 or not self.dataset.cache.full:
            return super().__iter__()
        sampler, collate, generator = self.batch_sampler, self.collate_fn, self.generator
        return iter(DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate, generator=generator))
