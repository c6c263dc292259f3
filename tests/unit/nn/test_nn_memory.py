"""uad.nn.memory: DualAD's memory module (cosine addressing, hard shrinkage, renormalisation)."""

from __future__ import annotations

import math

import pytest
import torch

from uad.nn.memory import MemoryModule


def _memory(rows: list[list[float]], threshold: float | None) -> MemoryModule:
    memory = MemoryModule(len(rows), len(rows[0]), shrink_threshold=threshold)
    with torch.no_grad():
        memory.weight.copy_(torch.tensor(rows))
    return memory


def test_memory_hard_shrinkage_keeps_the_slots_above_the_threshold_and_renormalises():
    # slots e1, e2, -e1 and the query e1: cosines (1, 0, -1), softmax (e, 1, 1/e) / (e + 1 + 1/e)
    memory = _memory([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], threshold=0.1)
    z = math.e + 1 + 1 / math.e
    soft = torch.tensor([math.e / z, 1 / z, 1 / (math.e * z)])  # 0.665, 0.245, 0.090
    assert soft[2] < 0.1 < soft[1]
    kept = torch.tensor([soft[0], soft[1], 0.0]) / (soft[0] + soft[1])
    weights, read = memory(torch.tensor([[3.0, 0.0]]))  # cosine addressing: the norm of x does not matter
    torch.testing.assert_close(weights[0], kept)
    torch.testing.assert_close(read[0], torch.tensor([kept[0], kept[1]]))


def test_memory_default_threshold_is_one_over_the_slots_and_there_is_no_residual():
    memory = _memory([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], threshold=None)
    assert memory.shrink_threshold == pytest.approx(1 / 3)
    weights, read = memory(torch.tensor([[1.0, 0.0]]))  # only the first slot is above 1/3: read = e1
    torch.testing.assert_close(weights[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(read[0], torch.tensor([1.0, 0.0]))


def test_memory_init_unit_rows_and_addressing_weights_sum_to_one():
    torch.manual_seed(0)
    memory = MemoryModule(196, 256)
    torch.testing.assert_close(memory.weight.norm(dim=-1), torch.ones(196))
    weights, read = memory(torch.randn(2, 10, 256))
    assert weights.shape == (2, 10, 196) and read.shape == (2, 10, 256)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 10))
    kept = weights > 0
    assert kept.any(-1).all() and not kept.all()  # shrinkage drops slots but never all of them
    torch.testing.assert_close(read, weights @ memory.weight)
