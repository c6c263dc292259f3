"""A torch Dataset over `Sample` records: decode, resize and binarise the mask by the protocol's rule,
transform; optionally keep every decoded-and-resized image in memory (`cache`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from uad.data.batch import Batch, batch_item
from uad.data.masks import DecodedMask, decode_mask
from uad.data.samples import DatasetLayoutError, Sample
from uad.data.transforms import InputTransform
from uad.utils.logging import get_logger

log = get_logger(__name__)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> RGB uint8 (H, W, 3); 16-bit grayscale is scaled 0..65535 -> 0..255."""
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img, dtype=np.float32)
        img = Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8))
    return np.asarray(img.convert("RGB"))


def decode_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file, decoded as training and evaluation decode it: grayscale (8 or
    16 bit), palette and RGBA files are converted (alpha dropped). Shared by the data sets and `mode=predict`,
    so that an image scores the same through either."""
    try:
        with Image.open(path) as img:
            return pil_to_rgb(img)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetLayoutError(
            f"cannot read image '{path}' ({err}). The file is unreadable or truncated: replace it, or "
            f"remove it from the dataset."
        ) from err


def load_image(sample: Sample) -> np.ndarray:
    """The sample's image, RGB uint8 (H, W, 3) (see `decode_image`)."""
    return decode_image(sample.path)


def unreadable_reason(path: Path) -> str | None:
    """None when the image file at `path` is whole, else what is wrong, without a full decode: PIL's
    `verify` walks the file's structure (PNG chunks with their CRCs, TIFF/BMP headers), and a JPEG must end
    with its end-of-image marker (a truncated download lacks it)."""
    try:
        with Image.open(path) as img:
            img.verify()
        if path.suffix.lower() in (".jpg", ".jpeg"):
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 1024))
                if b"\xff\xd9" not in f.read():
                    return "the JPEG end-of-image marker is missing (a truncated file)"
    except Exception as err:  # PIL raises many types for a broken file; each is a reason
        return f"{type(err).__name__}: {err}"
    return None


def check_images(samples: Sequence[Sample], threads: int = 4) -> None:
    """Every image and mask file of `samples` is whole, or one error naming the broken files (up to 20) and
    the fix: checked before training, so that a broken test image cannot cost a finished run's evaluation."""
    files = [("image", s.path) for s in samples]
    files += [("mask", s.mask_path) for s in samples if s.mask_path is not None]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        reasons = list(pool.map(unreadable_reason, [path for _, path in files]))
    broken = [(kind, path, r) for (kind, path), r in zip(files, reasons) if r is not None]
    if broken:
        listed = "\n".join(f"  cannot read {kind} '{path}' ({reason})" for kind, path, reason in broken[:20])
        more = f"\n  ... and {len(broken) - 20} more" if len(broken) > 20 else ""
        raise DatasetLayoutError(
            f"{len(broken)} file(s) cannot be read:\n{listed}{more}\nReplace or remove them (or set "
            f"dataset.check_images=false to find them only when they are read)."
        )


def load_mask(sample: Sample, shape: tuple[int, int], decode: str = "uad") -> DecodedMask | None:
    """The mask file decoded by `decode` (`uad.data.masks`), checked against its image's size; None for an
    image without a mask."""
    if sample.mask_path is None:
        return None
    mask = decode_mask(sample.mask_path, decode, sample.mask_kind == "labels")
    if mask.values.shape[:2] != shape:
        height, width = mask.values.shape[:2]
        raise DatasetLayoutError(
            f"mask '{sample.mask_path}' is {width}x{height} but its image '{sample.path}' is "
            f"{shape[1]}x{shape[0]}; save the mask at its image's size."
        )
    return mask


class AnomalyDataset(Dataset):
    """Samples of one or more classes; `class_names` fixes the class ids across splits.

    An item's `label` is the reader's (`good` or not); an evaluation rule that reads labels off the masks
    (`protocol.label_rule=mask`) is the evaluation's, with the item's `has_mask`.
    augment: called as `augment(image=, mask=)` on the resized uint8 arrays, returning the same keys (an
    albumentations `Compose`; training images only).
    With `cache`, `fill_cache()` decodes and resizes every image once (uint8, in the main process, so
    worker processes share the memory); each access then only crops, normalises and converts.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: InputTransform,
        class_names: Sequence[str],
        augment: Callable[..., dict] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.class_names = list(class_names)
        self.class_ids = {name: i for i, name in enumerate(self.class_names)}
        self.augment = augment
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
        decoded = load_mask(sample, image.shape[:2], self.transform.mask_decode)
        values = np.zeros(image.shape[:2], dtype=np.uint8) if decoded is None else decoded.values
        levels = self.transform.mask_levels(values, sample.mask_kind == "labels")
        image, mask = self.transform.resized(image, levels, decoded is not None and decoded.nearest)
        if sample.label == 1 and sample.mask_path is not None and not mask.any():
            self._log_empty_mask(sample, bool(levels.any()))
        return image, mask

    def _log_empty_mask(self, sample: Sample, had_pixels: bool) -> None:
        """Once per dataset: a defective image's mask is empty at the input size (in the file, or lost to the
        resize or to protocol.mask_rule, e.g. a 0/1 mask under DualAD's `resize_then_truncate`)."""
        if self._logged_empty_mask:
            return
        self._logged_empty_mask = True
        effect = "adds no defective pixels; it stays defective unless protocol.label_rule=mask"
        cause = (
            f"its defect pixels are lost by protocol.mask_resize={self.transform.mask_resize} + "
            f"mask_rule={self.transform.mask_rule} at {self.transform.image_size} px "
            f"(mask_rule=binarize_first keeps masks saved as 0/1 or with soft edges)"
            if had_pixels
            else "its mask file is empty"
        )
        log.warning(
            "defective image '%s': %s; it %s (further empty masks are not logged)", sample.path, cause, effect
        )

    def fill_cache(self, threads: int = 4) -> None:
        """Decode and resize every sample into memory (PIL and OpenCV release the GIL: threads suffice)."""
        if self.cache is not None:
            return
        with ThreadPoolExecutor(max(1, threads)) as pool:
            self.cache = list(pool.map(self.resized, range(len(self))))
        mib = sum(i.nbytes + m.nbytes for i, m in self.cache) / 2**20
        log.info("image cache: %d images, %.0f MiB", len(self.cache), mib)

    def __getitem__(self, index: int) -> Batch:
        sample = self.samples[index]
        image, mask = self.resized(index)
        if self.augment is not None:
            augmented = self.augment(image=image, mask=mask)
            image, mask = augmented["image"], augmented["mask"]
        image, mask = self.transform.finish(image, mask)
        return batch_item(
            image=image,  # (3, H, W) float, ImageNet-normalised
            mask=mask,  # (1, H, W) uint8 in {0, 1}
            label=sample.label,
            has_mask=sample.mask_path is not None,
            index=index,
            class_id=self.class_ids[sample.class_name],
            class_name=sample.class_name,
            defect=sample.defect,
            path=str(sample.path),
            sample_key=sample.sample_key,
            view=sample.view,
        )
