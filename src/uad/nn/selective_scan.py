"""Mamba's selective scan (Gu and Dao, 2023) in PyTorch, chunked so that a long sequence is not a Python loop
over every step; `mamba_ssm`'s CUDA kernel is used instead when it is installed and the input is on a GPU.

For each channel d and state n the scan runs the linear recurrence

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t,        y_t = <C_t, h_t> + D u_t,

then gates the output: out_t = y_t * silu(z_t). `delta` is first shifted by `delta_bias` and passed through
softplus when asked, exactly as `mamba_ssm.ops.selective_scan_interface.selective_scan_fn` takes them.

**Chunks.** The sequence of length L is cut into chunks of T steps (T ~ sqrt(L)). (1) Within every chunk the
recurrence runs from a zero state, all chunks at once: T steps on tensors holding every chunk. (2) A short
loop over the L / T chunks carries the state: the state entering chunk c is the one leaving chunk c - 1,
decayed by that chunk's total decay. (3) Each step adds its chunk's entering state decayed by the
cumulative log-decay from the chunk start. A 64 x 64 map (L = 4,096) takes 64 + 64 Python steps, not 4,096.
Every exponential is of a sum of non-positive numbers (decays A <= 0 times delta >= 0, measured from a chunk
start), so nothing overflows: a long strong decay underflows to 0, which is the exact limit.

**Memory.** The states are (channels x L x N) per image, 16 x the input: kept for the backward pass by
autograd they would take gigabytes per block. So the scan is one autograd function that keeps only its
inputs, and the backward pass recomputes the states and runs the adjoint recurrence
lambda_t = C_t dy_t + exp(delta_{t+1} A) lambda_{t+1} backwards in time with the same chunked scan, the way
mamba_ssm's kernel recomputes them. Both passes work through (image, group) slices of at most _WORKSPACE
state elements, so the working memory stays bounded whatever the batch; each slice costs T + L / T Python
steps (MambaAD's 64 x 64 level, 8 directions of 128 channels: 4 slices per image).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_WORKSPACE = 1 << 24  # state elements (channels x L x N) of one slice of (image, group) pairs


def _cuda_kernel():
    """`mamba_ssm`'s fused selective scan, or None when the package (with its CUDA build) is missing."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a build without its compiled kernel
        return None
    return selective_scan_fn


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    chunk: int | None = None,
    use_kernel: bool = True,
) -> Tensor:
    """The selective scan with `mamba_ssm.selective_scan_fn`'s arguments and result.

    u, delta, z: (b, D, L); A: (D, N); B, C: (b, N, L) shared by all channels, or (b, G, N, L) with group g
    serving channels g * D/G ... (g + 1) * D/G; D, delta_bias: (D,). Returns (b, D, L) in u's dtype; the
    arithmetic is float32. `chunk` overrides T; `use_kernel=False` forces the PyTorch path on a GPU.
    """
    if use_kernel and u.is_cuda:
        kernel = _cuda_kernel()
        if kernel is not None:
            return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    dtype = u.dtype
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    B, C = B.float(), C.float()
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]  # (b, 1, N, L): one group
    y = ChunkedScan.apply(u, delta, A.float(), B, C, chunk or 0)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def linear_recurrence(log_decay: Tensor, inputs: Tensor, T: int) -> Tensor:
    """All states h_t = exp(log_decay_t) * h_{t-1} + inputs_t, h_{-1} = 0, by chunks of T steps (the
    module docstring). log_decay <= 0 and inputs: (..., L, N) with L a multiple of T; returns (..., L, N)."""
    *lead, length, n = inputs.shape
    chunks = length // T
    log_decay = log_decay.reshape(*lead, chunks, T, n)
    inputs = inputs.reshape(*lead, chunks, T, n)
    decay = log_decay.exp()
    local = torch.empty_like(inputs)  # (1) within each chunk from a zero state, all chunks at once
    local[..., 0, :] = inputs[..., 0, :]
    for t in range(1, T):
        torch.addcmul(inputs[..., t, :], decay[..., t, :], local[..., t - 1, :], out=local[..., t, :])
    cumulative = log_decay.cumsum(dim=-2)  # (2) log-decay from each chunk's start, <= 0
    chunk_decay = cumulative[..., -1, :].exp()  # (..., c, N)
    entering = torch.zeros_like(local[..., 0, :])  # (..., c, N): the state entering each chunk
    for c in range(1, chunks):
        torch.addcmul(local[..., c - 1, -1, :], chunk_decay[..., c - 1, :], entering[..., c - 1, :],
                      out=entering[..., c, :])  # fmt: skip
    states = cumulative.exp_().mul_(entering[..., None, :]).add_(local)  # (3), (..., c, T, N)
    return states.reshape(*lead, length, n)


class ChunkedScan(torch.autograd.Function):
    """y = sum_n C_tn h_tn (no D, no gate) for u, delta (b, D, L), A (D, N), B, C (b, G, N, L), with the
    chunked recurrence forward and backward; saves only its inputs (the module docstring)."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> Tensor:
        ctx.save_for_backward(u, delta, A, B, C)
        ctx.chunk = chunk
        y = u.new_empty(u.shape)  # contiguous, whatever u's strides: slices of it are written below
        for part, (u_, delta_, A_, B_, C_) in _slices(u, delta, A, B, C):
            log_decay, inputs, T = _terms(u_, delta_, A_, B_, chunk)
            states = linear_recurrence(log_decay, inputs, T)  # (p, d, L', N)
            y.view(-1, *u_.shape[1:])[part] = _unpad((states * _per_step(C_, T)[:, None]).sum(-1), u_)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        u, delta, A, B, C = ctx.saved_tensors
        grads = [u.new_zeros(u.shape), u.new_zeros(u.shape)]  # contiguous: written through views
        dB, dC = B.new_zeros(B.shape), C.new_zeros(C.shape)
        dA = torch.zeros(B.shape[0], *A.shape, dtype=A.dtype, device=A.device)  # per image, summed at the end
        dy = dy.contiguous()
        g_count = B.shape[1]
        for part, (u_, delta_, A_, B_, C_) in _slices(u, delta, A, B, C):
            dy_ = dy.view(-1, *u_.shape[1:])[part]
            log_decay, inputs, T = _terms(u_, delta_, A_, B_, ctx.chunk)
            states = linear_recurrence(log_decay, inputs, T)  # (p, d, L', N)
            B_t, C_t = _per_step(B_, T)[:, None], _per_step(C_, T)[:, None]  # (p, 1, L', N)
            dy_pad = _pad(dy_, T)[..., None]  # (p, d, L', 1)
            # adjoint: lambda_t = C_t dy_t + exp(log_decay_{t+1}) lambda_{t+1}, run backwards in time
            next_decay = F.pad(log_decay[..., 1:, :], (0, 0, 0, 1))
            adjoint = linear_recurrence(next_decay.flip(-2), (dy_pad * C_t).flip(-2), T).flip(-2)
            through_decay = adjoint * (states - inputs)  # d loss / d (delta_t A), (p, d, L', N)
            through_input = (adjoint * B_t).sum(-1)  # d loss / d (delta_t u_t), (p, d, L')
            delta_p, u_p = _pad(delta_, T), _pad(u_, T)
            d_delta = (through_decay * A_[:, :, None]).sum(-1) + through_input * u_p
            grads[0].view(-1, *u_.shape[1:])[part] = _unpad(through_input * delta_p, u_)
            grads[1].view(-1, *u_.shape[1:])[part] = _unpad(d_delta, u_)
            dA.view(-1, *A_.shape[1:])[part] = (through_decay * delta_p[..., None]).sum(-2)
            scaled = (delta_p * u_p)[..., None]  # (p, d, L', 1)
            dB.view(-1, *B_.shape[1:])[part] = _unpad((adjoint * scaled).sum(1).transpose(1, 2), B_)
            dC.view(-1, *C_.shape[1:])[part] = _unpad((states * dy_pad).sum(1).transpose(1, 2), C_)
        dA = dA.view(B.shape[0], g_count, -1, A.shape[-1]).sum(0).view_as(A)
        return grads[0], grads[1], dA, dB, dC, None


def _slices(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor):
    """(slice, tensors) over the b * G (image, group) pairs, in slices of at most _WORKSPACE state elements:
    u, delta (p, d, L), A (p, d, N), B, C (p, N, L)."""
    b, channels, length = u.shape
    groups, n = B.shape[1], A.shape[1]
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} groups of B and C")
    d = channels // groups
    pairs = b * groups
    u, delta = u.reshape(pairs, d, length), delta.reshape(pairs, d, length)
    A = A.view(1, groups, d, n).expand(b, groups, d, n).reshape(pairs, d, n)
    B, C = B.reshape(pairs, n, length), C.reshape(pairs, n, length)
    step = max(1, _WORKSPACE // (d * length * n))
    for start in range(0, pairs, step):
        part = slice(start, start + step)
        yield part, (u[part], delta[part], A[part], B[part], C[part])


def _chunk_length(length: int, chunk: int) -> int:
    return chunk or math.isqrt(max(length - 1, 0)) + 1  # ~sqrt(L): as many chunks as steps per chunk


def _pad(x: Tensor, T: int) -> Tensor:
    """Pad the last dim to a multiple of T with zeros: delta 0 means decay 1 and no input, so padded steps
    change no state."""
    return F.pad(x, (0, -x.shape[-1] % T))


def _unpad(x: Tensor, like: Tensor) -> Tensor:
    return x[..., : like.shape[-1]]


def _per_step(x: Tensor, T: int) -> Tensor:
    """(p, N, L) -> (p, L', N), padded."""
    return _pad(x, T).transpose(1, 2)


def _terms(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, chunk: int) -> tuple[Tensor, Tensor, int]:
    """The recurrence's log-decays delta_t A and inputs delta_t u_t B_t, (p, d, L', N), and the chunk T."""
    T = _chunk_length(u.shape[-1], chunk)
    delta, u = _pad(delta, T), _pad(u, T)
    log_decay = delta[..., None] * A[:, :, None, :]
    inputs = (delta * u)[..., None] * _per_step(B, T)[:, None]
    return log_decay, inputs, T
