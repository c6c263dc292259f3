"""A torch Dataset over `Sample` records: decode, binarise the mask at full size, transform; optionally
keep every decoded-and-resized image in memory (`cache`)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from uad.data.samples import DatasetLayoutError, Sample
from uad.data.transforms import InputTransform
from uad.utils.logging import get_logger

log = get_logger(__name__)


def load_image(sample: Sample) -> np.ndarray:
    """RGB uint8 (H, W, 3): grayscale (8 or 16 bit), palette and RGBA files are converted (alpha dropped)."""
    try:
        with Image.open(sample.path) as img:
            if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grayscale: 0..65535 -> 0..255
                values = np.asarray(img, dtype=np.float32)
                img = Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8))
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DatasetLayoutError(
            f"cannot read image '{sample.path}' ({err}). The file is unreadable or truncated: replace it, or "
            f"remove it from the dataset."
        ) from err


def read_mask(sample: Sample) -> np.ndarray:
    """The mask file as one (H, W) array: colour masks use their channel maximum; an alpha channel is
    ignored unless the colour channels are all zero (a mask drawn in transparency)."""
    try:
        with Image.open(sample.mask_path) as img:
            mask = np.asarray(img)
            has_alpha = img.mode in ("LA", "RGBA", "PA")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DatasetLayoutError(
            f"cannot read mask '{sample.mask_path}' ({err}). Replace the file (single-channel PNG, 0 = good)."
        ) from err
    if mask.ndim == 3:
        colour = mask[..., :-1] if has_alpha else mask
        mask = colour.max(axis=2) if colour.any() or not has_alpha else mask[..., -1]
    return mask


def load_mask(sample: Sample, shape: tuple[int, int], threshold: float) -> np.ndarray:
    """Binary uint8 (H, W) mask: 1 where the mask exceeds `threshold` x its maximum (0 means any value > 0);
    label masks (`mask_kind="labels"`) count every non-zero pixel. Good images and empty masks give zeros.
    """
    if sample.mask_path is None:
        return np.zeros(shape, dtype=np.uint8)
    mask = read_mask(sample)
    if mask.shape != shape:
        raise DatasetLayoutError(
            f"mask '{sample.mask_path}' is {mask.shape[1]}x{mask.shape[0]} but its image '{sample.path}' is "
            f"{shape[1]}x{shape[0]}; save the mask at its image's size."
        )
    peak = mask.max()
    if peak == 0:
        return np.zeros(shape, dtype=np.uint8)
    if sample.mask_kind == "labels":
        return (mask > 0).astype(np.uint8)
    return (mask > threshold * peak).astype(np.uint8)


class AnomalyDataset(Dataset):
    """Samples of one or more classes; `class_names` fixes the class ids across splits.

    With `cache`, `fill_cache()` decodes and resizes every image once (uint8, in the main process, so
    worker processes share the memory); each access then only crops, normalises and converts.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: InputTransform,
        class_names: Sequence[str],
        mask_threshold: float = 0.5,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.class_names = list(class_names)
        self.class_ids = {name: i for i, name in enumerate(self.class_names)}
        self.mask_threshold = float(mask_threshold)
        self.cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._logged_empty_mask = False

    def __len__(self) -> int:
        return len(self.samples)

    def resized(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded image (h, w, 3) and binary mask (h, w), both at the resize size, uint8."""
        if self.cache is not None:
            return self.cache[index]
        sample = self.samples[index]
        image = load_image(sample)
        mask = load_mask(sample, image.shape[:2], self.mask_threshold)
        if sample.label == 1 and sample.mask_path is not None and not mask.any():
            self._log_empty_mask(sample)
        out = self.transform.resize(image=image, mask=mask)
        return out["image"], out["mask"]

    def _log_empty_mask(self, sample: Sample) -> None:
        if not self._logged_empty_mask:
            self._logged_empty_mask = True
            log.warning(
                "defective image '%s' has an empty mask: it stays defective for the image metrics and adds "
                "no defective pixels (further empty masks are not logged)",
                sample.path,
            )

    def fill_cache(self, threads: int = 4) -> None:
        """Decode and resize every sample into memory (PIL and OpenCV release the GIL: threads suffice)."""
        if self.cache is not None:
            return
        with ThreadPoolExecutor(max(1, threads)) as pool:
            self.cache = list(pool.map(self.resized, range(len(self))))
        mib = sum(i.nbytes + m.nbytes for i, m in self.cache) / 2**20
        log.info("image cache: %d images, %.0f MiB", len(self.cache), mib)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image, mask = self.resized(index)
        out = self.transform.finish(image=image, mask=mask)
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
