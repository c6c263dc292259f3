"""The batch every stage passes on: what `AnomalyDataset.__getitem__` yields, collated by the loader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import torch
from torch import Tensor


class Batch(TypedDict):
    """A collated batch (one item has the same keys, unbatched: ints, bools and strings)."""

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


def batch_item(**values: Any) -> Batch:
    """One item of a `Batch`, checked where it is made (a dataset's `__getitem__`): every key of `Batch`
    and no other, the image (3, H, W) floating point and the mask (1, H, W) uint8 of the same size. So a
    dataset that forgets or misspells a key fails at its first item, not in the stage that reads it."""
    keys = Batch.__required_keys__
    missing, unknown = sorted(keys - values.keys()), sorted(values.keys() - keys)
    if missing or unknown:
        raise TypeError(
            f"a batch item lacks {missing} and has unknown keys {unknown}; Batch has {sorted(keys)}"
        )
    image, mask = values["image"], values["mask"]
    if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise TypeError(f"a batch item's image must be (3, H, W) floating point, not {describe(image)}")
    if mask.shape != (1, *image.shape[1:]) or mask.dtype != torch.uint8:
        raise TypeError(
            f"a batch item's mask must be (1, {image.shape[1]}, {image.shape[2]}) uint8, not {describe(mask)}"
        )
    return Batch(**values)


def describe(tensor: Tensor) -> str:
    return f"{tuple(tensor.shape)} {tensor.dtype}"


def batch_size(batch: Mapping[str, Any]) -> int:
    """Images in a batch; a feature-cached training batch (uad.data.feature_cache) holds indices only."""
    return batch["image"].shape[0] if "image" in batch else len(batch["index"])
