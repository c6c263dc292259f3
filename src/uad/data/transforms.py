"""Each paper's input pipeline, step for step: image resize (OpenCV or PIL), mask resize and binarisation,
centre crop, ImageNet normalisation.

The three official pipelines differ in ways that move pixel metrics (read from the official code):

- **Dinomaly** (guojiajeremy/Dinomaly @ c5c76d0: `dataset.py` `get_data_transforms`, `MVTecDataset`;
  `utils.py` `evaluation_batch`). Image: `PIL.Image.open(..).convert("RGB")`, torchvision `Resize((448, 448))`
  on the PIL image (= PIL bilinear, which is antialiased), `ToTensor`, `CenterCrop(392)`, `Normalize`. Mask:
  the PIL mask file, `Resize((448, 448))` (PIL bilinear: a soft, one-pixel-wider edge), `CenterCrop(392)`,
  `ToTensor` (/255); at evaluation `F.interpolate(.., 256, mode="nearest")`, then `.bool()` (> 0). Label:
  the folder (`good` = 0); good images get an all-zero mask.
  Here: `resize=pil, mask_resize=pil_bilinear, mask_rule=resize_then_threshold, mask_threshold=0`.
- **UniAD** (zhiyuanyou/UniAD @ a5b9d9d: `datasets/image_reader.py`, `custom_dataset.py`, `base_dataset.py`
  `TestBaseTransform`; `utils/eval_helper.py`). Image: `cv2.imread(.., IMREAD_COLOR)`, BGR -> RGB,
  `Image.fromarray`, torchvision `Resize([224, 224], BILINEAR)` on PIL, `ToTensor`, `Normalize`. Mask:
  `cv2.imread(.., IMREAD_GRAYSCALE)`, `Resize(.., NEAREST)` on the PIL mask (PIL picks the source pixel
  under each output pixel's centre, unlike cv2's INTER_NEAREST), `ToTensor`; pixel metrics count mask > 0.
  Label: the metrics ignore the json `label`; an image is defective iff its resized mask has a pixel != 0
  (`EvalImage.encode_mask`). Here: `resize=pil, mask_resize=pil_nearest, mask_rule=resize_then_threshold,
  mask_threshold=0, label_rule=mask`.
- **DualAD** (cyhaan/DualAD @ 04ce68d: `datasets/mvtec_dataset.py`, `tools/train_val.py` `validate`). Image:
  `cv2.imread(.., IMREAD_COLOR)`, BGR -> RGB, `cv2.resize(.., (224, 224))` (INTER_LINEAR, no antialias),
  `ToTensor`, `Normalize`. Mask: `cv2.imread(.., IMREAD_GRAYSCALE)`, `cv2.resize(.., INTER_NEAREST)`,
  `ToTensor` (/255), then `.numpy().astype(int)`: truncation, so only grey level 255 is a defect. Label: the
  folder. Here: `resize=cv2, mask_resize=cv2_nearest, mask_rule=resize_then_truncate`.

Each reads the mask file its own way (`protocol.mask_decode`: Dinomaly `pil`, UniAD and DualAD `cv2_gray`);
`uad.data.masks` says what each makes of colour, palette and 16-bit masks.

Ours by default (`resize=cv2, mask_resize=cv2_nearest, mask_rule=binarize_first`): binarise at
`mask_threshold` x the mask's maximum at full size, then resize nearest; robust to masks saved as 0/1 or with
soft edges. Masks that are label maps (values 1..k, VisA's raw masks) or not 8-bit enter every rule as
0/255 of their non-zero pixels (the official VisA conversions write `mask != 0` as 255).

The pipeline is two stages so that the image cache can keep the costly part (decode, resize, binarise) as
uint8 and run only the cheap rest (crop, normalise, to tensor) per access.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from uad.data.masks import MASK_DECODES
from uad.encoders.registry import IMAGENET_MEAN, IMAGENET_STD
from uad.errors import ConfigError

RESIZES = ("cv2", "pil")
MASK_RULES = ("binarize_first", "resize_then_threshold", "resize_then_truncate")
CV2_FILTERS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}
PIL_FILTERS = {
    "linear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "cubic": Image.Resampling.BICUBIC,
}
MASK_FILTERS = {
    "cv2_nearest": ("cv2", cv2.INTER_NEAREST),
    "pil_nearest": ("pil", Image.Resampling.NEAREST),
    "pil_bilinear": ("pil", Image.Resampling.BILINEAR),
}


def resize_array(array: np.ndarray, size: int, library: str, interpolation: int) -> np.ndarray:
    """(H, W[, C]) -> (size, size[, C]): `cv2.resize`, or `PIL.Image.resize` (what torchvision's `Resize`
    calls on a PIL image; its filters always antialias when shrinking) on the image `Image.fromarray` makes
    (uint8 L, LA, RGB, RGBA; uint16 I;16)."""
    if library == "cv2":
        return cv2.resize(array, (size, size), interpolation=interpolation)
    return np.array(Image.fromarray(array).resize((size, size), interpolation))  # writable, for torch


def check_choice(key: str, value: str, allowed: tuple[str, ...] | dict) -> None:
    """One error for a protocol key outside its choices, naming the key, the choices and where to set it."""
    if value not in allowed:
        raise ConfigError(f"protocol.{key} '{value}' is not one of {sorted(allowed)} (conf/protocol/)")


@dataclass(frozen=True)
class InputTransform:
    """Resize to image_size x image_size (aspect ratio not kept, as in all three papers), binarise the mask
    by `mask_rule`, then centre-crop to crop_size (None = no crop), normalise and convert to tensors.

    resize / interpolation: the image resize library (`cv2` or `pil`) and filter (linear, area, cubic).
    mask_resize: `cv2_nearest`, `pil_nearest` or `pil_bilinear`, applied to the mask's grey levels.
    mask_rule: `binarize_first` (> mask_threshold x the maximum at full size, resize, keep >= 128);
    `resize_then_threshold` (resize the grey levels, keep > mask_threshold x 255); `resize_then_truncate`
    (resize, keep 255 only: int(level / 255)). A mask of several channels (`mask_decode=pil`) counts a
    pixel whose largest channel passes; a 16-bit one is compared at 16 bits (threshold x 65535).
    mask_decode: how the mask file is read (`uad.data.masks`): `uad`, `pil` (Dinomaly), `cv2_gray` (UniAD,
    DualAD).

    The protocol owns it (`EvalProtocol.input`); its keys are the flat input keys of `conf/protocol/`.
    """

    image_size: int
    crop_size: int | None = None
    resize: str = "cv2"
    interpolation: str = "linear"
    mask_resize: str = "cv2_nearest"
    mask_rule: str = "binarize_first"
    mask_threshold: float = 0.5
    mask_decode: str = "uad"

    def __post_init__(self) -> None:
        check_choice("resize", self.resize, RESIZES)
        check_choice("interpolation", self.interpolation, CV2_FILTERS)
        check_choice("mask_resize", self.mask_resize, MASK_FILTERS)
        check_choice("mask_rule", self.mask_rule, MASK_RULES)
        check_choice("mask_decode", self.mask_decode, MASK_DECODES)
        if not 0.0 <= self.mask_threshold < 1.0:
            raise ConfigError(f"protocol.mask_threshold must be in [0, 1); got {self.mask_threshold}")
        if self.crop_size is not None and self.crop_size > self.image_size:
            raise ConfigError(
                f"protocol.crop_size {self.crop_size} exceeds protocol.image_size {self.image_size}; "
                f"set a crop no larger than the resize"
            )

    @classmethod
    def from_protocol(cls, keys: Mapping[str, Any]) -> InputTransform:
        """The input pipeline of a protocol config (`conf/protocol/`): its own keys, the others ignored."""
        if keys.get("image_size") is None:
            raise ValueError("protocol.image_size is missing: the input side every image is resized to")
        return cls(**{f.name: keys[f.name] for f in fields(cls) if f.name in keys})

    @property
    def input_size(self) -> int:
        return self.crop_size or self.image_size

    def mask_levels(self, mask: np.ndarray, labels: bool = False) -> np.ndarray:
        """A mask file's decoded values (H, W[, C]) -> the levels to resize: binary 0/255 (H, W) for
        `binarize_first`, label maps and (but with `mask_decode=pil`) non-8-bit masks; the decoded values
        otherwise (with `pil`: the file's channels and bit depth, as Dinomaly resizes them)."""
        if self.mask_rule == "binarize_first" and not labels:
            mask = mask.max(axis=2) if mask.ndim == 3 else mask
            return np.where(mask > self.mask_threshold * mask.max(), 255, 0).astype(np.uint8)
        if labels or (mask.dtype != np.uint8 and self.mask_decode != "pil"):
            return np.where(mask > 0, 255, 0).astype(np.uint8)
        return mask

    def binarize(self, levels: np.ndarray) -> np.ndarray:
        """Resized levels (s, s[, C]) -> uint8 {0, 1} (s, s) by `mask_rule`, on the largest channel."""
        levels = levels.max(axis=2) if levels.ndim == 3 else levels
        full = 255 if levels.dtype == np.uint8 else 65535
        if self.mask_rule == "binarize_first":
            return (levels >= 128).astype(np.uint8)
        if self.mask_rule == "resize_then_truncate":
            return (levels == full).astype(np.uint8)
        return (levels > self.mask_threshold * full).astype(np.uint8)

    def resized(
        self, image: np.ndarray, levels: np.ndarray, nearest: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and mask levels (H, W[, C]) -> image (s, s, 3) uint8 and binary mask (s, s)
        uint8 at s = image_size: the cacheable stage. `nearest`: the mask is resized by nearest neighbour
        whatever `mask_resize` says (PIL does so for a palette or 1-bit file, `uad.data.masks`)."""
        filters = CV2_FILTERS if self.resize == "cv2" else PIL_FILTERS
        image = resize_array(image, self.image_size, self.resize, filters[self.interpolation])
        if not levels.any():
            return image, np.zeros(image.shape[:2], dtype=np.uint8)
        library, mask_filter = MASK_FILTERS[self.mask_resize]
        if nearest:
            mask_filter = cv2.INTER_NEAREST if library == "cv2" else Image.Resampling.NEAREST
        return image, self.binarize(resize_array(levels, self.image_size, library, mask_filter))

    def finish(self, image: np.ndarray, mask: np.ndarray) -> tuple[Tensor, Tensor]:
        """Resized image and binary mask -> image (3, c, c) float32, ImageNet-normalised, and mask (1, c, c)
        uint8: centre crop at torchvision's offset, round((size - c) / 2), then `ToTensor`, `Normalize`."""
        if self.crop_size:
            top = round((self.image_size - self.crop_size) / 2.0)
            window = slice(top, top + self.crop_size)
            image, mask = image[window, window], mask[window, window]
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)  # (3, c, c)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (x - mean) / std, torch.from_numpy(np.ascontiguousarray(mask))[None]

    def image(self, image: np.ndarray) -> Tensor:
        """A decoded image (H, W, 3) uint8 without mask -> (3, c, c) float32, exactly as in evaluation."""
        return self(image, np.zeros(image.shape[:2], dtype=np.uint8))[0]

    def __call__(self, image: np.ndarray, mask: np.ndarray, labels: bool = False) -> tuple[Tensor, Tensor]:
        return self.finish(*self.resized(image, self.mask_levels(mask, labels)))
