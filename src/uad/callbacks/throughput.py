"""Wall time and images per second of `fit` and `test`, recorded with the results."""

from __future__ import annotations

import time

from lightning.pytorch import Callback

from uad.data.batch import batch_size


class Throughput(Callback):
    def __init__(self) -> None:
        self.stats: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._images: dict[str, int] = {}

    def _begin(self, stage: str) -> None:
        self._start[stage], self._images[stage] = time.perf_counter(), 0

    def _end(self, stage: str) -> None:
        seconds = time.perf_counter() - self._start[stage]
        self.stats[f"{stage}_seconds"] = seconds
        self.stats[f"{stage}_images_per_s"] = self._images[stage] / seconds if seconds > 0 else 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._begin("train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images["train"] += batch_size(batch)

    def on_train_end(self, trainer, pl_module) -> None:
        self._end("train")

    def on_test_start(self, trainer, pl_module) -> None:
        self._begin("test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._images["test"] += batch["image"].shape[0]

    def on_test_end(self, trainer, pl_module) -> None:
        self._end("test")
