"""Neighbour-masked transformer blocks (uad/nn/attention.py), shared by UniAD and DualAD."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uad.nn.attention import (
    MultiHeadAttention,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    neighbour_mask,
)


def _grid_index(y: int, x: int, w: int = 14) -> int:
    return y * w + x


def test_neighbour_mask_hides_the_window_including_self():
    mask = neighbour_mask(14, 7)  # True = may attend
    assert mask.shape == (196, 196) and mask.dtype == torch.bool
    q = _grid_index(7, 7)
    for y in range(14):
        for x in range(14):
            inside = abs(y - 7) <= 3 and abs(x - 7) <= 3
            assert bool(mask[q, _grid_index(y, x)]) is not inside
    assert int(mask[q].sum()) == 196 - 49  # an interior token sees 147 keys (methods.md §1.1)


def test_neighbour_mask_borders_are_clipped():
    mask = neighbour_mask((14, 14), (7, 7))
    corner = _grid_index(0, 0)
    assert int(mask[corner].sum()) == 196 - 16  # 4x4 clipped window: 180 keys, as the official code
    assert not mask[corner, _grid_index(3, 3)] and mask[corner, _grid_index(4, 0)]
    edge = _grid_index(0, 7)
    assert int(mask[edge].sum()) == 196 - 4 * 7
    assert not mask.diagonal().any()  # no token sees itself
    assert torch.equal(mask, mask.T)


def test_neighbour_mask_even_size_and_rectangular_grid():
    mask = neighbour_mask((16, 12), (8, 8))  # ADer's 8x8 at 256: hides +-4 cells, as its code
    q = 8 * 12 + 6
    assert int((~mask[q]).sum()) == 9 * 9
    assert mask.shape == (192, 192)


def test_neighbour_mask_is_cached_and_rejects_a_blind_grid():
    assert neighbour_mask(14, 7) is neighbour_mask((14, 14), [7, 7])
    with pytest.raises(ValueError, match="neighbor_size"):
        neighbour_mask(4, 7)


def _direct_attention(attn: MultiHeadAttention, q, k, v, mask):
    """Softmax attention written out head by head."""
    heads = attn.num_heads
    Q, K, V = attn.q_proj(q), attn.k_proj(k), attn.v_proj(v)
    d = Q.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        scores = Q[..., sl] @ K[..., sl].transpose(1, 2) / math.sqrt(d)
        scores = scores.masked_fill(~mask, float("-inf"))
        outs.append(scores.softmax(-1) @ V[..., sl])
    return attn.out_proj(torch.cat(outs, -1))


def test_attention_equals_a_direct_computation_and_torch_mha():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, attn_dropout=0.1).eval()
    q, k, v = torch.randn(3, 2, 36, 32).unbind(0)
    mask = neighbour_mask(6, 3)
    out = attn(q, k, v, mask)
    assert out.shape == (2, 36, 32)
    torch.testing.assert_close(out, _direct_attention(attn, q, k, v, mask), atol=1e-5, rtol=1e-5)

    ref = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        ref.out_proj.load_state_dict(attn.out_proj.state_dict())
    expected = ref(q, k, v, attn_mask=~mask, need_weights=False)[0]  # torch MHA: True = blocked
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in attn.parameters()) == sum(p.numel() for p in ref.parameters())


def test_masked_token_ignores_its_neighbours():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, 64, 16)
    mask = neighbour_mask(8, 3)
    q = _grid_index(4, 4, w=8)
    y = x.clone()
    y[0, _grid_index(3, 5, w=8)] += 5.0  # a neighbour of q
    torch.testing.assert_close(attn(x, x, x, mask)[0, q], attn(y, y, y, mask)[0, q])
    z = x.clone()
    z[0, _grid_index(0, 0, w=8)] += 5.0  # far from q: it does change q's output
    assert not torch.allclose(attn(x, x, x, mask)[0, q], attn(z, z, z, mask)[0, q])


def test_layer_parameter_counts_match_uniad():
    # zhiyuanyou/UniAD models/reconstructions/uniad.py: TransformerEncoderLayer / TransformerDecoderLayer
    # at hidden 256, 8 heads, FFN 1024 (the decoder's learned query excluded): 789,760 and 1,053,440.
    enc = TransformerEncoderLayer(256, 8, 1024)
    dec = TransformerDecoderLayer(256, 8, 1024)
    assert sum(p.numel() for p in enc.parameters()) == 789_760
    assert sum(p.numel() for p in dec.parameters()) == 1_053_440


def test_encoder_layer_is_post_norm_detr_style():
    torch.manual_seed(0)
    layer = TransformerEncoderLayer(16, 2, 32).eval()
    x, pos = torch.randn(2, 36, 16), torch.randn(36, 16)
    mask = neighbour_mask(6, 3)
    qk = x + pos
    h = layer.norm1(x + layer.attn(qk, qk, x, mask))  # position only in queries and keys
    expected = layer.norm2(h + layer.ffn(h))
    torch.testing.assert_close(layer(x, pos, mask), expected)
    stack = TransformerEncoder(layer, 3)
    assert len(stack.layers) == 3 and stack.layers[0] is not stack.layers[1]
    assert stack(x, pos, mask).shape == (2, 36, 16)


def test_decoder_takes_one_query_per_layer():
    torch.manual_seed(0)
    decoder = TransformerDecoder(TransformerDecoderLayer(16, 2, 32), 2).eval()
    memory, pos = torch.randn(3, 36, 16), torch.randn(36, 16)
    mask = neighbour_mask(6, 3)
    shared = [torch.randn(36, 16), torch.randn(36, 16)]  # UniAD: a learned (N, D) query per layer
    outs = decoder(shared, memory, pos, mask)
    assert len(outs) == 2 and all(o.shape == (3, 36, 16) for o in outs)
    batched = [q.expand(3, -1, -1) for q in shared]  # DualAD: a per-image (B, N, D) query
    torch.testing.assert_close(decoder(batched, memory, pos, mask)[1], outs[1])
    first = decoder.layers[0](shared[0], memory, memory, pos, mask)
    second = decoder.layers[1](shared[1], memory, first, pos, mask)  # prev = the previous layer's output
    torch.testing.assert_close(outs[1], second)
    with pytest.raises(ValueError, match="queries"):
        decoder(shared[:1], memory, pos, mask)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    layer = TransformerEncoderLayer(16, 2, 32, dropout=0.5, attn_dropout=0.5)
    x = torch.randn(2, 36, 16)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


def test_flop_counter_sees_the_attention_matmuls():
    from torch.utils.flop_counter import FlopCounterMode

    attn = MultiHeadAttention(256, 8).eval()
    x = torch.randn(1, 196, 256)
    with FlopCounterMode(display=False) as counter:
        attn(x, x, x, neighbour_mask(14, 7))
    projections = 4 * 2 * 196 * 256 * 256
    scores_and_values = 2 * 2 * 196 * 196 * 256
    assert counter.get_total_flops() == projections + scores_and_values


@pytest.mark.parametrize(("grid", "size"), [((14, 14), (7, 7)), ((16, 16), (8, 8)), ((10, 6), (5, 3))])
def test_neighbour_mask_equals_the_official_window_loop(grid, size):
    # zhiyuanyou/UniAD models/reconstructions/uniad.py Transformer.generate_mask: for each query cell the
    # rows [i - hm//2, i + hm//2 + 1) and columns [j - wm//2, j + wm//2 + 1), clipped, are hidden
    (h, w), (hm, wm) = grid, size
    hidden = torch.zeros(h, w, h, w, dtype=torch.bool)
    for i in range(h):
        for j in range(w):
            rows = slice(max(i - hm // 2, 0), min(i + hm // 2 + 1, h))
            cols = slice(max(j - wm // 2, 0), min(j + wm // 2 + 1, w))
            hidden[i, j, rows, cols] = True
    assert torch.equal(neighbour_mask(grid, size), ~hidden.view(h * w, h * w))
