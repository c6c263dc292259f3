"""A torch Dataset over `Sample` records: decode, binarise the mask at full size, transform."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from uad.data.samples import DatasetLayoutError, Sample


def load_image(sample: Sample) -> np.ndarray:
    """RGB uint8 (H, W, 3); grayscale, palette and RGBA files are converted to RGB."""
    try:
        with Image.open(sample.path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetLayoutError(
            f"cannot read image '{sample.path}': {err}. Replace or remove the file."
        ) from err


def load_mask(sample: Sample, shape: tuple[int, int], threshold: float) -> np.ndarray:
    """Binary uint8 (H, W) mask: 1 where the mask exceeds `threshold` x its maximum (0 means any value > 0).

    Multi-channel masks use their channel maximum. Good images and empty masks give all zeros.
    """
    if sample.mask_path is None:
        return np.zeros(shape, dtype=np.uint8)
    try:
        with Image.open(sample.mask_path) as img:
            mask = np.asarray(img)
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetLayoutError(f"cannot read mask '{sample.mask_path}': {err}. Replace the file.") from err
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != shape:
        raise DatasetLayoutError(
            f"mask '{sample.mask_path}' is {mask.shape[1]}x{mask.shape[0]} but its image '{sample.path}' is "
            f"{shape[1]}x{shape[0]}; a mask must have its image's size."
        )
    peak = mask.max()
    if peak == 0:
        return np.zeros(shape, dtype=np.uint8)
    return (mask > threshold * peak).astype(np.uint8)


class AnomalyDataset(Dataset):
    """Samples of one or more classes; `class_names` fixes the class ids across splits."""

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: A.Compose,
        class_names: Sequence[str],
        mask_threshold: float = 0.5,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.class_names = list(class_names)
        self.class_ids = {name: i for i, name in enumerate(self.class_names)}
        self.mask_threshold = float(mask_threshold)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = load_image(sample)
        mask = load_mask(sample, image.shape[:2], self.mask_threshold)
        out = self.transform(image=image, mask=mask)
        return {
            "image": out["image"],  # (3, H, W) float, ImageNet-normalised
            "mask": torch.as_tensor(out["mask"], dtype=torch.uint8)[None],  # (1, H, W) in {0, 1}
            "label": sample.label,
            "index": index,
            "class_id": self.class_ids[sample.class_name],
            "class_name": sample.class_name,
            "defect": sample.defect,
            "path": str(sample.path),
            "sample_key": sample.sample_key,
            "view": sample.view,
        }
