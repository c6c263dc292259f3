"""The chunked selective scan (uad.nn.selective_scan) against mamba_ssm's reference scan and against a
sequential loop written from the recurrence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from uad.nn import selective_scan as scan_module
from uad.nn.selective_scan import ChunkedScan, linear_recurrence, selective_scan

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "selective_scan.json"


def sequential(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The definition, one step at a time: h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t per channel and
    state, y_t = <C_t, h_t> + D u_t, out = y * silu(z); B and C (b, N, L) or per group (b, G, N, L)."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    b, channels, length = u.shape
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]
    per_group = channels // B.shape[1]
    B, C = B.repeat_interleave(per_group, 1), C.repeat_interleave(per_group, 1)  # (b, D, N, L)
    h = torch.zeros(b, channels, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * u[..., t])[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D[:, None]
    return y if z is None else y * F.silu(z)


def random_inputs(grouped: bool, length: int = 23, dtype=torch.float64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b, groups, channels, states = 2, 3, 6, 4

    def draw(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    shape_bc = (b, groups, states, length) if grouped else (b, states, length)
    return {
        "u": draw(b, channels, length),
        "delta": draw(b, channels, length),
        "A": -torch.exp(0.5 * draw(channels, states)),
        "B": draw(*shape_bc),
        "C": draw(*shape_bc),
        "D": draw(channels),
        "z": draw(b, channels, length),
        "delta_bias": draw(channels),
    }


@pytest.mark.parametrize("name", ["plain", "ss2d"])
def test_equals_mamba_ssm_reference(name):
    """Outputs and gradients of mamba-ssm 2.3.2.post1's selective_scan_ref (the fixture's "source"), on
    the inputs recorded with them."""
    call = json.loads(FIXTURE.read_text())["calls"][name]
    leaves = {k: torch.tensor(v).requires_grad_() for k, v in call["inputs"].items()}
    out = selective_scan(**leaves, delta_softplus=call["delta_softplus"])
    torch.testing.assert_close(out, torch.tensor(call["out"]), rtol=1e-5, atol=1e-5)
    (out * torch.tensor(call["weight"])).sum().backward()
    for key, grad in call["grads"].items():
        torch.testing.assert_close(leaves[key].grad, torch.tensor(grad), rtol=1e-4, atol=1e-4, msg=key)


@pytest.mark.parametrize("chunk", [0, 1, 5, 23, 40])
@pytest.mark.parametrize("grouped", [False, True])
def test_equals_the_sequential_definition(chunk, grouped):
    """Every chunk length (0: ~sqrt(L); 1: one step per chunk; 5: L not a multiple; >= L: one chunk), with
    and without D, z, delta bias and softplus, and with shared or grouped B and C."""
    x = random_inputs(grouped)
    bare = {k: x[k] for k in ("u", "delta", "A", "B", "C")}
    bare["delta"] = bare["delta"].abs()
    torch.testing.assert_close(
        selective_scan(**bare, chunk=chunk).double(), sequential(**bare), rtol=1e-5, atol=1e-5
    )
    full = selective_scan(**x, delta_softplus=True, chunk=chunk)
    torch.testing.assert_close(full.double(), sequential(**x, delta_softplus=True), rtol=1e-5, atol=1e-5)


def test_gradients_through_the_recomputing_backward(monkeypatch):
    """float64 gradcheck of the autograd function, its work split into one (image, group) pair per slice."""
    monkeypatch.setattr(scan_module, "_WORKSPACE", 1)
    x = random_inputs(grouped=True, length=9)
    leaves = [x["u"], x["delta"].abs(), x["A"], x["B"], x["C"]]
    assert torch.autograd.gradcheck(
        lambda *a: ChunkedScan.apply(*a, 4), [t.clone().requires_grad_() for t in leaves]
    )


def test_gradients_with_gate_skip_and_bias_match_the_definition():
    """Also with B and C as SS2D passes them: slices of one projection, not contiguous."""
    x = {k: v.requires_grad_() for k, v in random_inputs(grouped=True).items()}
    y = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    weight = torch.randn(2, 6, 23, dtype=torch.float64)
    B, C = torch.cat([x["B"], x["C"]], dim=2).split(4, dim=2)  # (2, 3, 4, 23) views of one tensor
    assert not B.is_contiguous()
    (selective_scan(**{**x, "B": B, "C": C}, delta_softplus=True, chunk=4).double() * weight).sum().backward()
    (sequential(**y, delta_softplus=True) * weight).sum().backward()
    for key in x:
        torch.testing.assert_close(x[key].grad.double(), y[key].grad, rtol=1e-4, atol=1e-4, msg=key)


def test_strong_decay_neither_overflows_nor_loses_the_last_input():
    """delta * |A| of 800 per step: a sum of log-decays exp(+sum) would overflow float32 after one step;
    measured from the chunk start they only underflow, and each state is its last input."""
    x = random_inputs(grouped=False, length=64, dtype=torch.float32)
    delta = torch.full_like(x["u"], 50.0)
    A = torch.full_like(x["A"], -16.0)
    out = selective_scan(x["u"], delta, A, x["B"], x["C"], chunk=16)
    assert torch.isfinite(out).all()
    expected = delta * x["u"] * (x["B"] * x["C"]).sum(1, keepdim=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


def test_linear_recurrence_by_chunks_equals_the_loop():
    g = torch.Generator().manual_seed(1)
    log_decay = -torch.rand(3, 20, 2, generator=g, dtype=torch.float64)
    inputs = torch.randn(3, 20, 2, generator=g, dtype=torch.float64)
    h, expected = torch.zeros(3, 2, dtype=torch.float64), []
    for t in range(20):
        h = log_decay[:, t].exp() * h + inputs[:, t]
        expected.append(h)
    for T in (1, 4, 5, 20):
        torch.testing.assert_close(linear_recurrence(log_decay, inputs, T), torch.stack(expected, 1))
