"""Linear attention (uad.nn.linear_attention) against a direct O(N^2) computation of the same kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uad.nn.linear_attention import LinearAttention, linear_attention


def _direct(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """out_i = sum_j w_ij v_j / sum_j w_ij with w_ij = phi(q_i) . phi(k_j), phi = ELU + 1: the N x N form."""
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    weights = phi_q @ phi_k.transpose(-1, -2)  # (..., N, N), all positive
    return (weights @ v) / weights.sum(-1, keepdim=True)


def test_kernel_equals_the_quadratic_form():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, dtype=torch.float64) * 2 for _ in range(3))
    torch.testing.assert_close(linear_attention(q, k, v), _direct(q, k, v), rtol=1e-10, atol=1e-10)


def test_eps_enters_the_normaliser_only():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 1, 5, 4, dtype=torch.float64) for _ in range(3))
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    weights = phi_q @ phi_k.transpose(-1, -2)
    expected = (weights @ v) / (weights.sum(-1, keepdim=True) + 0.5)
    torch.testing.assert_close(linear_attention(q, k, v, eps=0.5), expected)


def test_module_splits_heads_and_projects():
    torch.manual_seed(2)
    attn = LinearAttention(dim=12, num_heads=3).double()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    q, k, v = attn.qkv(x).split(12, dim=-1)  # (B, N, D) each, heads are consecutive chunks of D

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(2, 7, 3, 4).transpose(1, 2)

    out = _direct(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(2, 7, 12)
    torch.testing.assert_close(attn(x), attn.proj(out))


def test_bf16_autocast_keeps_the_kernel_in_float32():
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 2, 400, 16) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    reference = _direct(q.bfloat16().double(), k.bfloat16().double(), v.bfloat16().double())
    torch.testing.assert_close(out.double(), reference, rtol=2e-2, atol=2e-2)
