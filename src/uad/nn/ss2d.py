"""The 2-D selective state-space block (SS2D, VMamba) and its residual wrapper, the hybrid-scan state-space
block (HSS block) of MambaAD (He et al., NeurIPS 2024, Sec. 3.3).

SS2D: a linear layer lifts each position to 2 x `expand` x dim and splits it into a stream x and a gate z;
x goes through a 3 x 3 depthwise convolution and SiLU, then is read as K one-dimensional sequences (the
directions of `uad.nn.scan_orders`). Each direction has its own input-dependent projections (x -> delta, B,
C), its own decay A and skip D, and one selective scan (`uad.nn.selective_scan`) runs them all; the K
outputs are put back in place and summed, layer-normalised, gated by silu(z) and projected back to dim.

The parameters keep the layout of VMamba's and MambaAD's SS2D (stacked per-direction `x_proj_weight`,
`dt_projs_weight`, `dt_projs_bias`; `A_logs` and `Ds` flattened over directions), so official state dicts
map by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from uad.nn.scan_orders import direction_orders
from uad.nn.selective_scan import selective_scan


class SS2D(nn.Module):
    """Multi-direction selective scan over a (B, H, W, dim) map of side `side`; returns (B, H, W, dim)."""

    def __init__(
        self,
        dim: int,
        side: int,
        scan: str = "hilbert",
        directions: int = 8,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 3,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        inner = expand * dim
        self.inner, self.d_state, self.directions = inner, d_state, directions
        self.dt_rank = math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner)
        projections = self.dt_rank + 2 * d_state
        bound = 1 / math.sqrt(inner)  # nn.Linear's default init, as the official stacked Linear weights
        self.x_proj_weight = nn.Parameter(torch.empty(directions, projections, inner).uniform_(-bound, bound))
        bound = self.dt_rank**-0.5
        self.dt_projs_weight = nn.Parameter(
            torch.empty(directions, inner, self.dt_rank).uniform_(-bound, bound)
        )
        # delta bias: softplus(bias) log-uniform in [dt_min, dt_max] (the inverse softplus of a draw there)
        dt = torch.exp(torch.rand(directions, inner) * math.log(dt_max / dt_min) + math.log(dt_min))
        dt = dt.clamp(min=dt_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real decays A = -(1 .. N) per channel, kept as log; skip D = 1
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1.0)).repeat(directions * inner, 1))
        self.Ds = nn.Parameter(torch.ones(directions * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        orders = direction_orders(side, scan, directions)  # (K, L): sequence step -> map position
        self.register_buffer("orders", orders, persistent=False)
        self.register_buffer("inverse_orders", orders.argsort(dim=-1), persistent=False)
        half = directions // 2  # the outputs are summed in the official order: d0, d0 reversed, d1, ...
        self.sum_order = [k for pair in zip(range(half), range(half, directions)) for k in pair]

    def scan(self, x: Tensor) -> Tensor:
        """(B, inner, H, W) -> (B, inner, H*W): the K directional selective scans, put back and summed."""
        b, inner, h, w = x.shape
        length, K = h * w, self.directions
        if length != self.orders.shape[-1]:
            raise ValueError(f"SS2D was built for a {self.orders.shape[-1]}-position map; got {h} x {w}")
        xs = x.flatten(2)[:, None].expand(b, K, inner, length)
        xs = xs.gather(-1, self.orders[None, :, None].expand(b, K, inner, length))  # (B, K, inner, L)
        projected = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)  # (B, K, R + 2N, L)
        dts, Bs, Cs = projected.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)  # (B, K, inner, L)
        ys = selective_scan(
            xs.reshape(b, K * inner, length),
            dts.reshape(b, K * inner, length),
            -torch.exp(self.A_logs.float()),
            Bs.float(),
            Cs.float(),
            self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().flatten(),
            delta_softplus=True,
        ).view(b, K, inner, length)
        ys = ys.gather(-1, self.inverse_orders[None, :, None].expand(b, K, inner, length))  # back in place
        return sum(ys[:, k] for k in self.sum_order)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, inner) each
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))  # (B, inner, H, W)
        y = self.scan(x).transpose(1, 2).reshape(b, h, w, self.inner)  # (B, H, W, inner)
        return self.out_proj(self.out_norm(y) * F.silu(z))


class HSSBlock(nn.Module):
    """x + DropPath(SS2D(LayerNorm(x))) on (B, H, W, dim)."""

    def __init__(self, dim: int, side: int, drop_path: float = 0.0, **ss2d) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SS2D(dim, side, **ss2d)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.self_attention(self.ln_1(x)))
