"""AnomalyModule's optimiser: torch's Adam and AdamW take their fused kernel, except where the config names an
implementation or mixed precision would make Lightning refuse gradient clipping; the fused update is the
plain one up to float rounding."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer

from uad.module import AnomalyModule
from uad.optim import StableAdamW


class Linear(torch.nn.Linear):
    """The one part of an AnomalyNet that `configure_optimizers` reads."""

    def trainable_parameters(self):
        return self.parameters()


def _optimizer(factory, precision: str | None = None) -> torch.optim.Optimizer:
    module = AnomalyModule(Linear(4, 3), factory)
    if precision is not None:
        module.trainer = Trainer(accelerator="cpu", precision=precision, logger=False)
    return module.configure_optimizers()


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW])
def test_adam_runs_fused_in_full_precision(optimizer):
    assert _optimizer(partial(optimizer, lr=1e-3)).defaults["fused"] is True
    assert _optimizer(partial(optimizer, lr=1e-3), "32-true").defaults["fused"] is True


def test_fused_is_not_chosen_against_the_config_or_under_mixed_precision():
    assert not _optimizer(partial(torch.optim.AdamW, lr=1e-3, foreach=False)).defaults["fused"]
    assert not _optimizer(partial(torch.optim.AdamW, lr=1e-3), "bf16-mixed").defaults["fused"]
    assert "fused" not in _optimizer(partial(StableAdamW, lr=1e-3)).defaults


def test_fused_adamw_update_equals_the_plain_one():
    torch.manual_seed(0)
    plain, fused = Linear(64, 32), Linear(64, 32)
    fused.load_state_dict(plain.state_dict())
    start = [p.detach().clone() for p in plain.parameters()]
    optimizers = [
        torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-2, fused=flag)
        for net, flag in ((plain, False), (fused, True))
    ]
    for _ in range(5):
        grads = [torch.randn_like(p) for p in plain.parameters()]
        for net, optimizer in zip((plain, fused), optimizers, strict=True):
            for p, g in zip(net.parameters(), grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    for a, b, a0 in zip(plain.parameters(), fused.parameters(), start, strict=True):
        assert (a - a0).abs().mean() > 1e-2  # the steps moved the parameters
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
