"""Exact resume: the random generators (torch, numpy, python; CUDA when used) go into every checkpoint and
come back on `ckpt_path=...`, so the epochs after a resume shuffle and augment exactly as an uninterrupted
run would (Lightning restores weights, optimiser and loop counters, but not the generators)."""

from __future__ import annotations

import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch import Callback, LightningModule, Trainer


class RngState(Callback):
    """Saves the generators' state with the checkpoint and restores it when training resumes from one."""

    key = "uad_rng_states"

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint[self.key] = _collect_rng_states(include_cuda=torch.cuda.is_available())

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get(self.key)
        if states is not None:
            _set_rng_states(states)
