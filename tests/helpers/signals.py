"""A callback that sends its own process a real signal at a chosen training step, so that a test interrupts
a real run at a known place (added on the command line: `+callbacks.kill._target_=...`)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class SignalAtStep(Callback):
    """os.kill(self, signum) once `trainer.global_step` reaches `step`; `hang` seconds of sleep after it
    (a run that a test kills from outside while it waits)."""

    def __init__(self, step: int, signum: str = "SIGTERM", hang: float = 0.0) -> None:
        self.step, self.signum, self.hang, self.sent = step, getattr(signal, signum), hang, False

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if not self.sent and trainer.global_step >= self.step:
            self.sent = True
            os.kill(os.getpid(), self.signum)
            time.sleep(self.hang)
