"""Mask files decoded as each paper's loader decodes them (`protocol.mask_decode`).

A mask saved in colour, with a palette or with 16 bits per pixel gives different defect pixels in each
official loader, because each decodes the file its own way (read from the official code):

- **`pil`** (Dinomaly: `Image.open(gt)` with no conversion, then torchvision `Resize` and `ToTensor`, and at
  evaluation the maximum over channels, `> 0`). The file keeps its own mode through the resize: colour
  channels are resized each, RGBA with its alpha premultiplied (PIL does so) and the alpha counted as one
  more channel (an opaque RGBA mask is defective everywhere), a palette or 1-bit file by nearest neighbour
  on its palette indices (PIL resizes those modes by nearest whatever the filter asked; index 0 is good
  whatever its colour), a 16-bit file at 16 bits (`ToTensor` does not rescale it).
- **`cv2_gray`** (UniAD, DualAD: `cv2.imread(path, cv2.IMREAD_GRAYSCALE)`). OpenCV's PNG reader lets libpng
  convert: alpha dropped, a palette expanded to its colours, colour to grey by libpng's truncating fixed
  point `(9797 R + 19234 G + 3737 B) >> 15` (0.299 / 0.587 / 0.114 in units of 2^-15; grey pixels are kept
  as they are), 16 bits cut to their high byte. A pure red defect is grey 76, which DualAD (only grey 255 is
  a defect) drops; a 16-bit mask saved as 0/1 is empty.
- **`uad`** (ours, the default): PIL; a colour mask is the maximum of its colour channels, the alpha
  channel counts only when the colour channels are all zero (a mask drawn in transparency); a palette file
  is read by its colours (a label map, `mask_kind="labels"`, by its indices: the labels); 16-bit values are
  kept and binarised at a fraction of their own maximum (`mask_rule=binarize_first`) or as non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from uad.data.samples import DatasetLayoutError

MASK_DECODES = ("uad", "pil", "cv2_gray")
NEAREST_MODES = ("P", "1")  # PIL's resize uses nearest neighbour for these modes whatever the filter


@dataclass(frozen=True)
class DecodedMask:
    """A mask file's values: (H, W) or (H, W, C), uint8 (uint16 for a 16-bit file under `pil`); `nearest`:
    resize by nearest neighbour whatever the protocol's filter (a palette or 1-bit file under `pil`)."""

    values: np.ndarray
    nearest: bool = False


def _unreadable(path: Path, err: object) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"cannot read mask '{path}' ({err}). Replace the file (single-channel PNG, 0 = good)."
    )


def _uad(img: Image.Image, labels: bool) -> np.ndarray:
    """Ours: one (H, W) array (see the module docstring)."""
    if img.mode == "P" and not labels:
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    mask = np.asarray(img)
    if mask.ndim == 3:
        has_alpha = img.mode in ("LA", "RGBA", "PA")
        colour = mask[..., :-1] if has_alpha else mask
        mask = colour.max(axis=2) if colour.any() or not has_alpha else mask[..., -1]
    return mask


def _pil(img: Image.Image) -> DecodedMask:
    """Dinomaly: the file's own values and channels; a 1-bit file as 0 / 255 (as `ToTensor` scales it)."""
    values = np.asarray(img)
    if img.mode == "1":
        values = values.astype(np.uint8) * 255
    return DecodedMask(values, nearest=img.mode in NEAREST_MODES)


def decode_mask(path: Path, how: str = "uad", labels: bool = False) -> DecodedMask:
    """The mask file at `path` decoded by `how` (MASK_DECODES); `labels`: a label map, whose non-zero
    values are the defects whatever the decoder (the official VisA conversions read it with PIL and keep
    `!= 0`), read as `uad` reads it."""
    if how == "cv2_gray" and not labels:
        values = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if values is None:
            raise _unreadable(path, "OpenCV cannot decode it")
        return DecodedMask(values)
    try:
        with Image.open(path) as img:
            return _pil(img) if how == "pil" and not labels else DecodedMask(_uad(img, labels))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise _unreadable(path, err) from err
