"""SS2D (uad.nn.ss2d): its K directions at once equal K separate selective scans, each read along its own
order with its own parameters and put back in place."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uad.nn.selective_scan import selective_scan
from uad.nn.ss2d import SS2D, HSSBlock


@pytest.mark.parametrize("directions", [2, 4, 8])
def test_directions_are_independent_scans_summed_in_place(directions):
    torch.manual_seed(0)
    block = SS2D(dim=4, side=4, scan="zigzag", directions=directions, d_state=3)
    x = torch.randn(2, 8, 4, 4)  # (B, inner, H, W)
    flat = x.flatten(2)  # (B, inner, L)
    expected = torch.zeros_like(flat)
    inner, rank, n = block.inner, block.dt_rank, block.d_state
    for k in range(directions):
        order = block.orders[k]
        seq = flat[..., order]  # (B, inner, L) in scan order
        projected = torch.einsum("bdl,cd->bcl", seq, block.x_proj_weight[k])
        dts, B, C = projected.split([rank, n, n], dim=1)
        channels = slice(k * inner, (k + 1) * inner)
        y = selective_scan(
            seq,
            torch.einsum("brl,dr->bdl", dts, block.dt_projs_weight[k]),
            -torch.exp(block.A_logs[channels]),
            B,
            C,
            block.Ds[channels],
            delta_bias=block.dt_projs_bias[k],
            delta_softplus=True,
        )
        expected[..., order] += y  # step i of the sequence belongs at map position order[i]
    torch.testing.assert_close(block.scan(x), expected, rtol=1e-5, atol=1e-5)


def test_block_is_residual_and_keeps_the_shape():
    torch.manual_seed(0)
    block = HSSBlock(dim=8, side=4, scan="hilbert", directions=8)
    x = torch.randn(2, 4, 4, 8)
    out = block(x)
    assert out.shape == x.shape
    with torch.no_grad():
        block.self_attention.out_proj.weight.zero_()
    torch.testing.assert_close(block(x), x)


def test_a_map_of_another_size_is_refused():
    block = SS2D(dim=4, side=4)
    with pytest.raises(ValueError, match="16-position map"):
        block(torch.randn(1, 8, 8, 4))


def test_gate_and_norm_as_the_official_forward():
    """out = out_proj(LayerNorm(scan(silu(conv(x)))) * silu(z)), x and z the halves of in_proj."""
    torch.manual_seed(1)
    block = SS2D(dim=4, side=2, scan="sweep", directions=2, d_state=2)
    x = torch.randn(1, 2, 2, 4)
    stream, gate = block.in_proj(x).chunk(2, dim=-1)
    conv = F.silu(block.conv2d(stream.permute(0, 3, 1, 2)))
    y = block.scan(conv).transpose(1, 2).reshape(1, 2, 2, block.inner)
    expected = block.out_proj(block.out_norm(y) * F.silu(gate))
    torch.testing.assert_close(block(x), expected)
