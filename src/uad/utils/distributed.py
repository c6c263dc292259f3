"""Lightning's `ddp` for every network, including one with nothing to train."""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy


class FrozenSafeDDPStrategy(DDPStrategy):
    """`trainer.strategy=ddp` (one process per device), except that a module without a trainable parameter
    (a memory-bank method: its module gathers the training features of every rank itself) is not wrapped in
    `DistributedDataParallel`, which refuses a module with no gradient to reduce."""

    def configure_ddp(self) -> None:
        if any(parameter.requires_grad for parameter in self.model.parameters()):
            super().configure_ddp()
