"""The batch every stage passes on: what `AnomalyDataset.__getitem__` yields, collated by the loader."""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor


class Batch(TypedDict):
    """A collated batch (one item has the same keys, unbatched)."""

    image: Tensor  # (B, 3, H, W) float32, ImageNet-normalised
    mask: Tensor  # (B, 1, H, W) uint8 in {0, 1}
    label: Tensor  # (B,) the folder's: 0 = good, 1 = defective (protocol.labels applies label_rule)
    has_mask: Tensor  # (B,) bool: the image has a mask file
    index: Tensor  # (B,) dataset index, the key evaluation de-duplicates on
    class_id: Tensor  # (B,)
    class_name: list[str]
    defect: list[str]
    path: list[str]
    sample_key: list[str]  # multi-view sample id (Real-IAD), else ""
    view: list[str]


def batch_size(batch: dict) -> int:
    """Images in a batch; a feature-cached training batch (uad.data.feature_cache) holds indices only."""
    return batch["image"].shape[0] if "image" in batch else len(batch["index"])
