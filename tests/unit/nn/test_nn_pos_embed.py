"""Positional codes (uad/nn/pos_embed.py)."""

from __future__ import annotations

import math

import pytest
import torch

from uad.nn.pos_embed import (
    LearnedPositionalEmbedding2d,
    SinePositionalEmbedding2d,
    build_positional_embedding,
)


def test_learned_code_is_column_then_row():
    pos = LearnedPositionalEmbedding2d((3, 5), 8)
    code = pos()
    assert code.shape == (15, 8)
    for y in range(3):
        for x in range(5):
            torch.testing.assert_close(code[y * 5 + x], torch.cat([pos.col_embed[x], pos.row_embed[y]]))
    assert 0.0 <= pos.row_embed.min() and pos.row_embed.max() <= 1.0  # U(0, 1) init
    assert sum(p.numel() for p in LearnedPositionalEmbedding2d(14, 256).parameters()) == 3_584


def test_sine_code_equals_detr_formula():
    h, w, dim = 4, 6, 16
    code = SinePositionalEmbedding2d((h, w), dim)()
    half, eps = dim // 2, 1e-6
    for y in range(h):
        for x in range(w):
            expected = []
            for value in ((y + 1) / (h + eps) * 2 * math.pi, (x + 1) / (w + eps) * 2 * math.pi):
                for i in range(half):
                    angle = value / 10000 ** (2 * (i // 2) / half)
                    expected.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
            torch.testing.assert_close(code[y * w + x], torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert not list(SinePositionalEmbedding2d(4, 16).parameters())


def test_build_rejects_unknown_kind():
    assert isinstance(build_positional_embedding("sine", 4, 16), SinePositionalEmbedding2d)
    with pytest.raises(ValueError, match="learned"):
        build_positional_embedding("rope", 4, 16)
