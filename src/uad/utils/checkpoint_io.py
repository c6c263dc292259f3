"""Checkpoints that a crash or a full disk cannot damage: Lightning's checkpoint writer, but through a
temporary file in the checkpoint's own folder that is fsynced and renamed over the target. A failed save
(ENOSPC, a kill) leaves the previous `last.ckpt` whole and no partial file behind, and says so in one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from uad.errors import UserError
from uad.utils.io import atomic_write


class CheckpointSaveError(UserError):
    """A checkpoint could not be written (a full disk, a read-only folder); the previous one is kept."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """`trainer.plugins` entry (conf/trainer/default.yaml); remote paths (`s3://...`) go to Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            atomic_write(path, lambda handle: torch.save(checkpoint, handle), mode="wb")
        except (OSError, RuntimeError) as err:  # torch reports a short write as a RuntimeError
            try:
                free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
            except OSError:
                free = "its folder cannot be read"
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointSaveError(
                f"cannot save checkpoint '{path}' ({reason}; {free}); the previous checkpoint is kept "
                "whole: free some space or give another hydra.run.dir="
            ) from err
