"""The records evaluation works on: one row per test image, gathered from every rank."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class EvalRecords:
    """Every evaluated image, one row per dataset index, sorted by index. `map` and `mask` are at the
    protocol's evaluation size; `score` is the protocol's image score of `map`."""

    index: Tensor  # (N,) dataset indices
    score: Tensor  # (N,) image scores
    label: Tensor  # (N,) 0 = good, 1 = defective
    map: Tensor  # (N, h, w) anomaly maps
    mask: Tensor  # (N, h, w) bool ground truth
    class_name: list[str]
    defect: list[str]
    path: list[str]
    sample_key: list[str]  # multi-view sample id (Real-IAD), else ""

    def __len__(self) -> int:
        return len(self.index)

    def of_class(self, name: str) -> Tensor:
        """(N,) bool: the rows of class `name`."""
        return torch.tensor([n == name for n in self.class_name], dtype=torch.bool)
