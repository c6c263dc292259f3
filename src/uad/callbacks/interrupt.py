"""SIGTERM (kill, SLURM pre-emption) and SIGINT (Ctrl+C) end a run truthfully: during training the signal
only sets a flag; at the end of the current step `checkpoints/last.ckpt` is saved (a Lightning checkpoint:
weights, optimiser, loop counters, the generators and the loader's place in the epoch) and the run stops
with `RunInterrupted`, which `uad.pipeline.run` records as "interrupted" and `run.py` turns into exit
status 128 + the signal number. Outside the training steps (data setup, evaluation) it stops at once; a
second signal always stops at once.

On SLURM a pre-empted or timed-out job gets SIGTERM, so it stops the same way; requeued (submitit's
`hydra.launcher.max_num_timeout`, or Lightning's SLURM auto-requeue), it resumes from that checkpoint on its
own (`requeued_checkpoint`, docs/scaling.md).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from uad.data.resumable import ResumableLoader
from uad.errors import RunInterrupted
from uad.utils.logging import get_logger

log = get_logger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def requeued_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint a requeued SLURM job resumes from: its folder's `checkpoints/last.ckpt` (written when
    SLURM's SIGTERM stopped the previous attempt) when `SLURM_RESTART_COUNT` says this is a requeue."""
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1:
        return None
    last = output_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


class Interruption(Callback):
    """Installs the SIGTERM/SIGINT handlers for a whole run (`install` / `restore`, main thread only) and,
    as a callback of each trainer, saves the checkpoint at the end of the step the signal came in."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.checkpoint: str | None = None
        self.step: int | None = None
        self._deferred = False
        self._previous: dict[int, Any] = {}

    def install(self) -> Interruption:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._deferred and self.pending is None:
            self.pending = signum
            log.warning(
                "%s: saving a checkpoint at the end of this step, then stopping (send it again to stop now)",
                signal.Signals(signum).name,
            )
            return
        raise RunInterrupted(signum, self.checkpoint, self.step)

    def _save(self, trainer: Trainer) -> str:
        path = str(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt")
        trainer.save_checkpoint(path)
        self.checkpoint, self.step = path, trainer.global_step
        return path

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._deferred = True

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loader = trainer.train_dataloader
        if isinstance(loader, ResumableLoader):
            loader.consumed = batch_idx + 1
        if self.pending is not None:
            self._deferred = False
            raise RunInterrupted(self.pending, self._save(trainer), trainer.global_step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._deferred = False
        if self.pending is not None:  # came in after the last step: the epoch's checkpoint is saved now
            raise RunInterrupted(self.pending, self._save(trainer), trainer.global_step)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Lightning's own SIGTERM stop (at an epoch's end, between the loop's steps): save there too."""
        self._deferred = False
        if isinstance(exception, SIGTERMException) and self.pending is not None and self.checkpoint is None:
            self._save(trainer)

    def as_interrupted(self, err: BaseException) -> RunInterrupted | None:
        """The interruption an exception out of a run stands for (None: it is not one)."""
        if isinstance(err, RunInterrupted):
            return err
        if isinstance(err, (SIGTERMException, KeyboardInterrupt)) and (
            self.pending or isinstance(err, KeyboardInterrupt)
        ):
            return RunInterrupted(self.pending or signal.SIGINT, self.checkpoint, self.step)
        return None
