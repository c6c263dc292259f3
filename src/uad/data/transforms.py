"""Albumentations pipelines that reproduce each paper's input protocol (resize, optional centre crop,
ImageNet normalisation). Masks are resized with nearest neighbour after being binarised at full size."""

from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from uad.encoders.registry import IMAGENET_MEAN, IMAGENET_STD

INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}


def build_transform(
    image_size: int, crop_size: int | None = None, interpolation: str = "linear"
) -> A.Compose:
    """Resize to image_size x image_size (aspect ratio not kept, as all three papers), then centre-crop."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"protocol.interpolation '{interpolation}' is not one of {sorted(INTERPOLATIONS)}")
    steps = [A.Resize(image_size, image_size, interpolation=INTERPOLATIONS[interpolation])]
    if crop_size:
        steps.append(A.CenterCrop(crop_size, crop_size))
    steps += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return A.Compose(steps)
