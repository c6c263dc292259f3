"""What every method shares: the frozen encoder, the optimiser set-up, the training and test steps, and
the hand-off of per-image anomaly maps to evaluation. A method file holds only what is its own:
its trainable modules, `forward` (which names the tensors it produces) and `loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.optim import Optimizer

from uad.encoders import Encoder

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], Any]


class AnomalyModel(LightningModule):
    """Base LightningModule: a frozen `Encoder` plus the trainable modules a subclass adds.

    Subclasses implement:
      forward(images) -> dict with at least "anomaly_map": (B, 1, H, W) at input resolution, plus the
        named intermediate tensors (`mode=describe` prints their shapes);
      loss(outputs) -> scalar tensor, or a dict whose "loss" entry is optimised (others are logged).
    The encoder is kept in eval mode, gets no gradients, is left out of the optimiser and out of saved
    checkpoints (it is rebuilt from its weights source when a checkpoint is loaded).
    """

    def __init__(
        self,
        encoder: Encoder,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.strict_loading = False  # checkpoints carry only the trainable state

    @classmethod
    def default_taps(cls, spec) -> tuple[int, ...] | None:
        """Encoder taps this method wants for `spec` when `backbone.taps` is not set (None: the spec's)."""
        return None

    # -- the method's own part --------------------------------------------------------------------

    def forward(self, images: Tensor) -> dict[str, Any]:
        raise NotImplementedError

    def loss(self, outputs: dict[str, Any]) -> Tensor | dict[str, Tensor]:
        raise NotImplementedError

    # -- shared behaviour -------------------------------------------------------------------------

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {name: module for name, module in self.named_children() if name != "encoder"}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        outputs = self(batch["image"])
        losses = self.loss(outputs)
        losses = losses if isinstance(losses, dict) else {"loss": losses}
        batch_size = batch["image"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train/{name}", value, batch_size=batch_size)
        return losses["loss"]

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        """Per-image anomaly maps at input resolution; the Evaluator callback turns them into metrics."""
        outputs = self(batch["image"])
        return {"anomaly_map": outputs["anomaly_map"].float()}

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        return self.test_step(batch, batch_idx)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("no optimizer configured: set method.optimizer in the config")
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def train(self, mode: bool = True) -> AnomalyModel:
        super().train(mode)
        self.encoder.eval()  # Lightning calls train() on the whole module; BatchNorm must stay frozen
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.")
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        own = {k for k in self.state_dict() if not k.startswith("encoder.")}
        missing = sorted(own - set(checkpoint["state_dict"]))
        if missing:
            raise KeyError(f"checkpoint lacks trainable tensors of this model, e.g. {missing[:5]}")

    @torch.no_grad()
    def parameter_counts(self) -> dict[str, Any]:
        per_module = {
            name: sum(p.numel() for p in module.parameters() if p.requires_grad)
            for name, module in self.trainable_modules().items()
        }
        return {
            "trainable_params": sum(p.numel() for p in self.trainable_parameters()),
            "frozen_params": sum(p.numel() for p in self.parameters() if not p.requires_grad),
            "per_module": {k: v for k, v in per_module.items() if v},
        }
