"""Colour, palette and 16-bit mask files decode as each official loader decodes them (`uad.data.masks`).

The expected values are derived here from the definition of each decoder, not by calling it: libpng's
fixed-point RGB-to-grey with truncation and its 16-to-8-bit strip (what `cv2.imread(.., IMREAD_GRAYSCALE)`
runs on a PNG: UniAD, DualAD), PIL's file modes kept unconverted (Dinomaly), and our own rule.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from uad.data.masks import decode_mask
from uad.data.samples import DatasetLayoutError
from uad.data.transforms import InputTransform

# A 2 x 3 colour mask: red, green, white / faint red, black, grey 7.
RGB = np.array(
    [[[255, 0, 0], [0, 255, 0], [255, 255, 255]], [[10, 0, 0], [0, 0, 0], [7, 7, 7]]], dtype=np.uint8
)


def libpng_grey(rgb: np.ndarray) -> np.ndarray:
    """libpng's png_do_rgb_to_gray for 8-bit pixels with the coefficients OpenCV passes (0.299, 0.587):
    each scaled by 32768 / 100000 and truncated (9797, 19234; blue the rest, 3737), the weighted sum
    shifted right by 15 (truncation); a pixel with equal channels is copied."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    red, green = 29900 * 32768 // 100000, 58700 * 32768 // 100000
    grey = (red * r + green * g + (32768 - red - green) * b) >> 15
    return np.where((r == g) & (g == b), r, grey).astype(np.uint8)


def save(tmp_path, name: str, img: Image.Image):
    path = tmp_path / f"{name}.png"
    img.save(path)
    return path


def test_colour_mask(tmp_path):
    path = save(tmp_path, "rgb", Image.fromarray(RGB))
    grey = decode_mask(path, "cv2_gray").values
    assert np.array_equal(grey, libpng_grey(RGB))
    assert grey.tolist() == [[76, 149, 255], [2, 0, 7]]  # pure red is grey 76: not a defect for DualAD
    assert np.array_equal(decode_mask(path, "pil").values, RGB)  # Dinomaly keeps the three channels
    assert decode_mask(path, "uad").values.tolist() == [[255, 255, 255], [10, 0, 7]]  # channel maximum


def test_rgba_mask(tmp_path):
    """Opaque: Dinomaly counts the alpha channel (every pixel passes `> 0`), OpenCV drops it. Drawn in
    transparency (colour 0): OpenCV and ours-by-colour see nothing, ours falls back on the alpha."""
    opaque = np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)])
    path = save(tmp_path, "opaque", Image.fromarray(opaque))
    assert np.array_equal(decode_mask(path, "cv2_gray").values, libpng_grey(RGB))
    assert np.array_equal(decode_mask(path, "pil").values, opaque)
    assert decode_mask(path, "uad").values.tolist() == [[255, 255, 255], [10, 0, 7]]
    drawn = np.zeros((2, 3, 4), np.uint8)
    drawn[0, 1, 3] = 200
    path = save(tmp_path, "drawn", Image.fromarray(drawn))
    assert not decode_mask(path, "cv2_gray").values.any()
    assert decode_mask(path, "uad").values.tolist() == [[0, 200, 0], [0, 0, 0]]
    dinomaly = InputTransform(4, mask_rule="resize_then_threshold", mask_threshold=0.0, mask_decode="pil")
    every = dinomaly.binarize(dinomaly.mask_levels(decode_mask(tmp_path / "opaque.png", "pil").values))
    assert every.all()


def test_palette_mask(tmp_path):
    """Indices 0..3 with colours black, dark red, black, white. Dinomaly counts indices != 0 (index 2 is
    black, yet a defect) and resizes by nearest; OpenCV and ours read the colours."""
    img = Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8), "P")
    img.putpalette([0, 0, 0, 100, 0, 0, 0, 0, 0, 255, 255, 255])
    path = save(tmp_path, "palette", img)
    dinomaly = decode_mask(path, "pil")
    assert dinomaly.values.tolist() == [[0, 1], [2, 3]] and dinomaly.nearest
    colours = np.array([[[0, 0, 0], [100, 0, 0]], [[0, 0, 0], [255, 255, 255]]], np.uint8)
    assert np.array_equal(decode_mask(path, "cv2_gray").values, libpng_grey(colours))
    assert decode_mask(path, "cv2_gray").values.tolist() == [[0, 29], [0, 255]]
    assert decode_mask(path, "uad").values.tolist() == [[0, 100], [0, 255]]
    assert decode_mask(path, "uad", labels=True).values.tolist() == [[0, 1], [2, 3]]  # a label map: ids


def test_sixteen_bit_mask(tmp_path):
    """OpenCV without IMREAD_ANYDEPTH keeps the high byte (libpng's png_set_strip_16): a mask saved as 0/1
    in 16 bits is empty for UniAD and DualAD; Dinomaly resizes and compares the 16-bit values."""
    values = np.array([[0, 1, 255], [256, 32768, 65535]], np.uint16)
    path = save(tmp_path, "deep", Image.fromarray(values))
    high_byte = [[0, 0, 0], [1, 128, 255]]
    assert decode_mask(path, "cv2_gray").values.tolist() == (values >> 8).tolist() == high_byte
    for how in ("pil", "uad"):
        decoded = decode_mask(path, how).values
        assert decoded.dtype == np.uint16 and np.array_equal(decoded, values)
    dinomaly = InputTransform(3, mask_rule="resize_then_threshold", mask_threshold=0.0, mask_decode="pil")
    levels = dinomaly.mask_levels(values)
    assert levels.dtype == np.uint16 and np.array_equal(dinomaly.binarize(levels), values > 0)
    ours = InputTransform(3)  # binarize_first at half the maximum
    assert ours.binarize(ours.mask_levels(values)).tolist() == [[0, 0, 0], [0, 1, 1]]


def test_unreadable_mask_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    for how in ("uad", "pil", "cv2_gray"):
        with pytest.raises(DatasetLayoutError, match=r"cannot read mask .*broken\.png"):
            decode_mask(path, how)
