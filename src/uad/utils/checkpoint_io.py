"""Checkpoints that a crash or a full disk cannot damage: Lightning's checkpoint writer, but through a
temporary file in the checkpoint's own folder that is fsynced and renamed over the target. A failed save
(ENOSPC, a kill) leaves the previous `last.ckpt` whole and no partial file behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from uad.utils.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """`trainer.plugins` entry (conf/trainer/default.yaml); remote paths (`s3://...`) go to Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle), mode="wb")
