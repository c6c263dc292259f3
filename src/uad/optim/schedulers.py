"""Learning-rate schedules stepped per optimiser step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    """Linear warm-up, then cosine decay, then constant (Dinomaly's `WarmCosineScheduler`).

    With base lr b (each group's initial lr), final lr f = b * final_ratio, warm-up W and total T steps:
    steps 0..W-1 go linearly from b * warmup_start_ratio to b (numpy `linspace`, so step 0 uses the start
    value and step W-1 uses b); step W + i (i < T - W) uses f + (b - f)(1 + cos(pi i / (T - W))) / 2;
    from step T on, f (a run shorter than its warm-up stops on the warm-up line, as the official schedule).
    Step with `interval: step`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        final_ratio: float = 0.1,
        warmup_start_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(
                f"WarmupCosineLR: total_steps ({total_steps}) must be > 0 and warmup_steps ({warmup_steps}) "
                ">= 0; set trainer.max_steps (or method.scheduler.total_steps) to the length of the run"
            )
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_ratio = final_ratio
        self.warmup_start_ratio = warmup_start_ratio
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The multiplier of the base lr at optimiser step `step` (0-based)."""
        if step >= self.total_steps:
            return self.final_ratio
        if step < self.warmup_steps:
            if self.warmup_steps == 1:
                return self.warmup_start_ratio
            return self.warmup_start_ratio + (1 - self.warmup_start_ratio) * step / (self.warmup_steps - 1)
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
