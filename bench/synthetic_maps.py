"""Random anomaly maps with blob defects for the metric tests and bench/bench_metrics.py."""

from __future__ import annotations

import numpy as np
import torch


def blob_data(seed: int, n: int = 12, size: int = 40, heavy: bool = False, ties: bool = False):
    """Random maps with elliptic blob defects (some touching diagonally, some images defect-free),
    noise that is heavy-tailed or rounded into ties on demand; scores, labels, maps, masks as tensors."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n // 3, n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(3, size - 3, 2)
            ry, rx = rng.uniform(1, max(6, size // 12), 2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    masks[n - 1, 5, 5] = masks[n - 1, 6, 6] = True  # two pixels touching only at a corner: one region
    noise = rng.standard_cauchy(masks.shape) if heavy else rng.normal(size=masks.shape)
    maps = noise + 2.0 * masks * rng.uniform(0.2, 1.5, (n, 1, 1))
    if ties:
        maps = np.round(maps * 2) / 2
    maps = maps.astype(np.float32)
    labels = masks.reshape(n, -1).any(1).astype(np.int64)
    scores = maps.reshape(n, -1).max(1)
    return (
        torch.from_numpy(scores),
        torch.from_numpy(labels),
        torch.from_numpy(maps),
        torch.from_numpy(masks),
    )
