"""The progress bar (callbacks=default): Lightning's rich bar, but a run counted in steps
(`trainer.max_steps`, `trainer.max_epochs=-1`) shows its steps instead of "Epoch 1/-2"."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar


def counts_steps(trainer: Trainer) -> bool:
    return trainer.max_steps > 0 and (trainer.max_epochs is None or trainer.max_epochs < 0)


class ProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        if counts_steps(self.trainer):
            return f"Step {self.trainer.global_step}/{self.trainer.max_steps}"
        return super()._get_train_description(current_epoch)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if counts_steps(trainer) and self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, description=self._get_train_description(0))
        super().on_train_batch_end(trainer, pl_module, *args)
