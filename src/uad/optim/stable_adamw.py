"""StableAdamW (Wortsman et al. 2023, "Stable and low-precision training for large-scale vision-language
models"), as Dinomaly trains with it (official `optimizers/StableAdamW.py`).

AdamW (optionally AMSGrad) whose step is shrunk per tensor, AdaFactor-style, when the current gradient is
large relative to the second-moment estimate: this keeps the first steps of a freshly initialised decoder
from blowing up without needing a long warm-up. Per parameter tensor, at step t with learning rate lr:

    theta <- theta * (1 - lr * weight_decay)                      (decoupled decay, applied first)
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2;   v_hat <- max(v_hat, v) with AMSGrad, else v
    delta = sqrt(v_hat) / sqrt(1 - b2^t) + eps
    s = max(1, RMS(g / delta) / clip_threshold)                  (RMS over the tensor, raw gradient g)
    theta <- theta - lr / (1 - b1^t) / s * m / delta
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer


class StableAdamW(Optimizer):
    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        clip_threshold: float = 1.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or clip_threshold <= 0:
            raise ValueError(
                "StableAdamW: lr, eps and weight_decay must be >= 0 and clip_threshold > 0; got "
                f"lr={lr}, eps={eps}, weight_decay={weight_decay}, clip_threshold={clip_threshold}"
            )
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"StableAdamW: betas must be in [0, 1); got {betas}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "clip_threshold": clip_threshold,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("StableAdamW does not support sparse gradients")
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                state["step"] += 1
                bias1 = 1 - beta1 ** state["step"]
                bias2 = 1 - beta2 ** state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                second = exp_avg_sq
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                    second = state["max_exp_avg_sq"]
                denom = (second.sqrt() / math.sqrt(bias2)).add_(group["eps"])
                rms = (grad / denom).norm(2) / math.sqrt(grad.numel())
                shrink = max(1.0, float(rms) / group["clip_threshold"])
                p.addcdiv_(exp_avg, denom, value=-group["lr"] / bias1 / shrink)
        return loss
