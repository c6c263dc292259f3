"""StableAdamW and the warm-up + cosine schedule (uad.optim) against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uad.optim import StableAdamW, WarmupCosineLR


def _reference_steps(theta, grads, lr, betas, eps, wd, clip):
    """StableAdamW (AMSGrad) written out per element in plain Python, from the definition in
    guojiajeremy/Dinomaly optimizers/StableAdamW.py (class StableAdamW, `step`)."""
    b1, b2 = betas
    theta = list(theta)
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    v_max = [0.0] * len(theta)
    for t, g in enumerate(grads, start=1):
        theta = [x * (1 - lr * wd) for x in theta]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        v_max = [max(a, b) for a, b in zip(v_max, v)]
        delta = [math.sqrt(x) / math.sqrt(1 - b2**t) + eps for x in v_max]
        rms = math.sqrt(sum((gi / di) ** 2 for gi, di in zip(g, delta)) / len(g))
        shrink = max(1.0, rms / clip)
        step = lr / (1 - b1**t) / shrink
        theta = [x - step * mi / di for x, mi, di in zip(theta, m, delta)]
    return theta


@pytest.mark.parametrize("clip", [1.0, 0.3])
def test_stable_adamw_matches_its_definition(clip):
    theta0 = [0.5, -1.0, 2.0, 0.1]
    grads = [[0.3, -0.2, 0.05, 1.0], [-0.1, 0.4, 0.02, -2.0], [0.2, 0.1, -0.3, 0.5]]
    p = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    opt = StableAdamW([p], lr=0.01, betas=(0.9, 0.999), eps=1e-10, weight_decay=0.1, amsgrad=True,
                      clip_threshold=clip)  # fmt: skip
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    expected = _reference_steps(theta0, grads, 0.01, (0.9, 0.999), 1e-10, 0.1, clip)
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)


def test_first_step_is_shrunk_by_the_rms_of_the_update():
    # step 1: m_hat = g and delta = |g| + eps, so RMS(g / delta) ~ 1; with clip 0.5 the step is halved
    p = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    opt = StableAdamW([p], lr=0.1, eps=0.0, weight_decay=0.0, clip_threshold=0.5)
    p.grad = torch.tensor([3.0, -0.5], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([1 - 0.05, 1 + 0.05], dtype=torch.float64))


def test_without_clipping_it_is_adamw_amsgrad():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = torch.nn.Parameter(a.detach().clone())
    ours = StableAdamW([a], lr=1e-2, weight_decay=1e-2, amsgrad=True, clip_threshold=1e12)
    torch_adamw = torch.optim.AdamW([b], lr=1e-2, weight_decay=1e-2, amsgrad=True)
    for _ in range(4):
        g = torch.randn(5, 3)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        torch_adamw.step()
    torch.testing.assert_close(a, b)


def test_bad_hyper_parameters_are_refused():
    with pytest.raises(ValueError, match="betas"):
        StableAdamW([torch.nn.Parameter(torch.zeros(1))], betas=(0.9, 1.0))


def _official_schedule(base, final, total, warmup, start=0.0):
    """WarmCosineScheduler in guojiajeremy/Dinomaly utils.py, recounted: linspace warm-up, then cosine."""
    warm = np.linspace(start, base, warmup)
    iters = np.arange(total - warmup)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warm, cosine))


def test_warmup_cosine_follows_the_official_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2e-3)
    sched = WarmupCosineLR(opt, total_steps=30, warmup_steps=5, final_ratio=0.1)
    seen = []
    for _ in range(33):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [*_official_schedule(2e-3, 2e-4, 30, 5), 2e-4, 2e-4, 2e-4]
    np.testing.assert_allclose(seen, expected, rtol=1e-12, atol=1e-15)
    assert seen[0] == 0.0  # the first optimiser step uses lr 0


def test_a_run_shorter_than_its_warmup_stays_on_the_warmup_line():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLR(opt, total_steps=3, warmup_steps=5, final_ratio=0.1)
    assert [sched.factor(s) for s in range(5)] == [0.0, 0.25, 0.5, 0.1, 0.1]


def test_warmup_cosine_needs_a_horizon():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"trainer\.max_steps"):
        WarmupCosineLR(opt, total_steps=-1, warmup_steps=100)
