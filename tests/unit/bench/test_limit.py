"""bench/bench_limit.py's GEMM share: a step of matrix products is nearly all GEMM, elementwise none."""

from __future__ import annotations

import torch

from tests.unit.bench.test_official_e2e import load


def test_gemm_share_tells_matrix_products_from_elementwise_work() -> None:
    limit = load("bench_limit")
    a = torch.randn(512, 512)
    products, names = limit.gemm_share(lambda: [a @ a for _ in range(4)])
    elementwise, _ = limit.gemm_share(lambda: [(a * 2).exp_() for _ in range(4)])
    assert products > 0.9 and "mm" in names
    assert elementwise == 0.0
