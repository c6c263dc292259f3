"""Albumentations pipelines that reproduce each paper's input protocol (resize, optional centre crop,
ImageNet normalisation). Masks are resized with nearest neighbour after being binarised at full size.

The pipeline is two stages so that the image cache can keep the costly part (decode + resize) as uint8
and run only the cheap rest (crop, normalise, to tensor) per access.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from uad.encoders.registry import IMAGENET_MEAN, IMAGENET_STD

INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}


@dataclass
class InputTransform:
    """`resize` (image bilinear/area/cubic, mask nearest) then `finish` (centre crop, normalise, tensor)."""

    resize: A.Compose
    finish: A.Compose

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> dict:
        return self.finish(**self.resize(image=image, mask=mask))


def build_transform(
    image_size: int, crop_size: int | None = None, interpolation: str = "linear"
) -> InputTransform:
    """Resize to image_size x image_size (aspect ratio not kept, as all three papers), then centre-crop."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"protocol.interpolation '{interpolation}' is not one of {sorted(INTERPOLATIONS)}")
    resize = A.Compose([A.Resize(image_size, image_size, interpolation=INTERPOLATIONS[interpolation])])
    finish = [A.CenterCrop(crop_size, crop_size)] if crop_size else []
    finish += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return InputTransform(resize, A.Compose(finish))
