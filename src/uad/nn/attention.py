"""Neighbour-masked transformer blocks shared by UniAD and DualAD's narrow-deep network (NDN).

All tensors are batch-first: tokens `(B, N, D)` with `N = h * w` laid out row-major over the feature
grid. Positional codes `(N, D)` are added to queries and keys only (DETR style), never to values or to
the residual stream. Layers are post-norm, as both official codes are.

API:
  neighbour_mask(grid, neighbourhood, device) -> (N, N) bool, True = may attend (SDPA convention)
  MultiHeadAttention(dim, num_heads, attn_dropout)(query, key, value, mask) -> (B, Nq, D)
  TransformerEncoderLayer(dim, num_heads, ffn_dim, dropout, attn_dropout)(x, pos, mask) -> (B, N, D)
  TransformerDecoderLayer(...)(query, memory, prev, pos, mask) -> (B, N, D): the query is any tensor,
    (N, D) shared by the batch (UniAD's learned query) or (B, N, D) (DualAD's WSN chunks)
  TransformerEncoder(layer, num_layers)(x, pos, mask) -> (B, N, D)
  TransformerDecoder(layer, num_layers)(queries, memory, pos, mask) -> list of every layer's (B, N, D)
  FusedQKVAttention(dim, num_heads, qkv_bias)(x) -> (B, N, D): timm's ViT attention layout (fused qkv, proj)
    with the per-head kernel left to a subclass: SelfAttention (softmax; ViTAD's decoder blocks) here,
    uad.nn.linear_attention.LinearAttention (Dinomaly's)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_SDPA not in flop_registry:  # torch counts the CUDA kernels only; `mode=describe` runs on CPU

    @register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = (int(v) for v in value)
    return h, w


@lru_cache(maxsize=32)
def _neighbour_mask(h: int, w: int, nh: int, nw: int, device: str) -> Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # (N,) row-major grid coordinates
    near = ((ys[:, None] - ys[None, :]).abs() <= nh // 2) & ((xs[:, None] - xs[None, :]).abs() <= nw // 2)
    return (~near).to(device)  # (N, N)


def neighbour_mask(
    grid: int | Sequence[int], neighbourhood: int | Sequence[int], device: torch.device | str = "cpu"
) -> Tensor:
    """UniAD's neighbour mask: a token may NOT attend to the keys in its own neighbourhood.

    Returns an (N, N) bool tensor, N = h * w, with True where the query (row) may attend to the key
    (column), the convention of `F.scaled_dot_product_attention`. Key (y', x') is hidden from query (y, x)
    when |y - y'| <= nh // 2 and |x - x'| <= nw // 2: the window centred on the query, the query itself
    included, clipped at the borders (so border tokens see more keys). As in the official code an even
    size n hides 2 * (n // 2) + 1 cells per axis. Built once per (grid, neighbourhood, device), cached.
    """
    h, w = _pair(grid)
    nh, nw = _pair(neighbourhood)
    if h <= 2 * (nh // 2) + 1 and w <= 2 * (nw // 2) + 1:
        raise ValueError(
            f"a {nh}x{nw} neighbourhood hides the whole {h}x{w} feature grid from its centre token; "
            "use a smaller neighbourhood (method.model.neighbor_size) or a larger input (protocol.image_size)"
        )
    return _neighbour_mask(h, w, nh, nw, str(torch.device(device)))


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention via `F.scaled_dot_product_attention`.

    Same parameters as `nn.MultiheadAttention` (q/k/v/out projections with bias, 4 * (D^2 + D)), but
    batch-first. `attn_dropout` drops attention probabilities in training (UniAD: 0.1, DualAD: 0).
    `mask` is (Nq, Nk) bool (True = attend) or additive float, broadcast over batch and heads.
    """

    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.attn_dropout = attn_dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, heads, N, D/heads)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = (
            self._heads(self.q_proj(query)),
            self._heads(self.k_proj(key)),
            self._heads(self.v_proj(value)),
        )
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, heads, Nq, D/heads)
        return self.out_proj(out.transpose(1, 2).flatten(2))  # (B, Nq, D)


class FeedForward(nn.Module):
    """Linear -> activation -> dropout -> Linear: the transformer's position-wise MLP."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; choose one of {sorted(_ACTIVATIONS)}")
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            _ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class TransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: x = LN(x + drop(MHA(x+pos, x+pos, x))); x = LN(x + drop(FFN(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, attn_dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        qk = _with_pos(x, pos)
        x = self.norm1(x + self.drop1(self.attn(qk, qk, x, mask)))
        return self.norm2(x + self.drop2(self.ffn(x)))


class TransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer with an external query (UniAD's layer-wise query, DualAD's NDN query).

    With E the encoder output (`memory`) and `prev` the previous decoder layer's output (E for the first):
      t = LN1(q + drop(MHA(q+pos, E+pos, E)))         # attends to the encoder output
      t = LN2(t + drop(MHA(t+pos, prev+pos, prev)))   # attends to the previous layer
      t = LN3(t + drop(FFN(t)))
    The token stream restarts from the query in every layer; `prev` enters only as keys and values.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.memory_attn = MultiHeadAttention(dim, num_heads, attn_dropout)
        self.prev_attn = MultiHeadAttention(dim, num_heads, attn_dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        memory: Tensor,
        prev: Tensor,
        pos: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        if query.dim() == 2:
            query = query.expand(memory.shape[0], -1, -1)  # (N, D) -> (B, N, D)
        t = self.norm1(
            query + self.drop1(self.memory_attn(_with_pos(query, pos), _with_pos(memory, pos), memory, mask))
        )
        t = self.norm2(t + self.drop2(self.prev_attn(_with_pos(t, pos), _with_pos(prev, pos), prev, mask)))
        return self.norm3(t + self.drop3(self.ffn(t)))


class TransformerEncoder(nn.Module):
    """`num_layers` independent copies of `layer`, applied in turn; no final norm (post-norm layers)."""

    def __init__(self, layer: TransformerEncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, x: Tensor, pos: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos, mask)
        return x


class TransformerDecoder(nn.Module):
    """`num_layers` copies of `layer`; layer l gets `queries[l]` and the previous layer's output.

    Returns every layer's output (DualAD concatenates them; UniAD normalises the last). No final norm.
    """

    def __init__(self, layer: TransformerDecoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(
        self,
        queries: Sequence[Tensor],
        memory: Tensor,
        pos: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> list[Tensor]:
        if len(queries) != len(self.layers):
            raise ValueError(f"the decoder has {len(self.layers)} layers but got {len(queries)} queries")
        outputs, prev = [], memory
        for layer, query in zip(self.layers, queries):
            prev = layer(query, memory, prev, pos, mask)
            outputs.append(prev)
        return outputs


class FusedQKVAttention(nn.Module):
    """Multi-head self-attention in the ViT layout on (B, N, D) tokens: one fused `qkv` projection (D -> 3D),
    a per-head kernel (`attend`, the subclass's), output projection `proj`; timm's `Attention` parameters
    and key names, so a ViT block's state dict loads as is."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{type(self).__name__}: width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """(B, heads, N, d) each -> (B, heads, N, d)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        out = self.attend(q, k, v)  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class SelfAttention(FusedQKVAttention):
    """Plain softmax attention over all tokens (scaled dot product): timm's ViT `Attention`, the token mixer
    of ViTAD's decoder blocks (`uad.nn.vit_block.ViTBlock`)."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)


class PackedKVCrossAttention(nn.Module):
    """Multi-head attention from queries (B, N, D) to a context (B, M, D), in the ViT layout: projections `q`
    (D -> D) and `kv` (D -> 2D: keys then values, one tensor), a per-head kernel (`attend`, the subclass's),
    output projection `proj`. Keys and values share one weight as in INP-Former's official blocks: an
    optimiser that scales each tensor's step (StableAdamW's RMS clip) treats them together, as there."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{type(self).__name__}: width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """(B, heads, N, d), (B, heads, M, d) x 2 -> (B, heads, N, d)."""
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        heads, width = self.num_heads, dim // self.num_heads
        q = self.q(x).reshape(batch, tokens, heads, width).transpose(1, 2)  # (B, heads, N, d)
        kv = self.kv(context).reshape(batch, context.shape[1], 2, heads, width)
        k, v = kv.permute(2, 0, 3, 1, 4)  # each (B, heads, M, d)
        out = self.attend(q, k, v)  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class CrossAttention(PackedKVCrossAttention):
    """Softmax attention (scaled dot product) from the queries to the context."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)
