"""Sample records and the reader of the MVTec-style tree (MVTec AD, MPDD, converted VisA, users' folders).

Tree: <root>/<class>/train/good/*, <root>/<class>/test/<good|defect>/*,
<root>/<class>/ground_truth/<defect>/<stem><suffix>.png. Masks are paired to images by name, never by
sorted position; labels come from the folder name, never from mask content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from uad.errors import UserError
from uad.utils.logging import get_logger

log = get_logger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MASK_KINDS = ("intensity", "labels")


class DatasetLayoutError(UserError, ValueError):
    """The files on disk do not form the expected layout; the message names the path and the fix."""


@dataclass(frozen=True)
class Sample:
    """One image of a split. `label` is 0 for good, 1 for defective; `mask_path` is None for good images
    (and for defective images of a class that has no masks at all).

    mask_kind: "intensity" masks (0/255, possibly soft) are binarised at a fraction of their maximum;
    "labels" masks (VisA's raw defect-class ids 1..k) count every non-zero pixel.
    sample_key groups the views of one physical object (Real-IAD); view is its camera ("C1".."C5").
    """

    path: Path
    class_name: str
    label: int
    defect: str
    mask_path: Path | None = None
    sample_key: str = ""
    view: str = ""
    mask_kind: str = "intensity"


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder (any case of the suffix), sorted by name. Hidden files are not images;
    other files that are not images are skipped with a warning, so nothing disappears unseen."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if len(images) < len(files):
        others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        log.warning(
            "'%s': skipping %d files that are not images (%s); images end in %s",
            folder,
            len(others),
            ", ".join(others[:3]),
            sorted(IMAGE_SUFFIXES),
        )
    return images


MVTEC_LAYOUT = """\
  <root>/<class>/train/good/<id>.png
  <root>/<class>/test/good/<id>.png
  <root>/<class>/test/<defect>/<id>.png
  <root>/<class>/ground_truth/<defect>/<id>_mask.png"""


def tree_classes(root: Path) -> list[str]:
    """Class folders under `root`: those holding both train/ and test/ (sorted)."""
    return sorted(p.name for p in root.iterdir() if (p / "train").is_dir() and (p / "test").is_dir())


def find_mask(folder: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
    """The mask of image `stem` in `folder`: `<stem><suffix>.<any image extension>`, first suffix first."""
    for suffix in suffixes:
        for ext in (".png", ".PNG", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".JPG"):
            candidate = folder / f"{stem}{suffix}{ext}"
            if candidate.is_file():
                return candidate
    return None


def read_tree_split(
    root: Path,
    class_name: str,
    split: str,
    mask_suffixes: Sequence[str] = ("_mask",),
    layout: str = MVTEC_LAYOUT,
    masks_optional: bool = False,
) -> list[Sample]:
    """All samples of one class and split ("train" or "test") of an MVTec-style tree.

    A defective image needs the mask `ground_truth/<defect>/<stem><suffix>` for one of `mask_suffixes`.
    With `masks_optional`, a class without any `ground_truth/` folder is read with image labels only.
    """
    class_dir = root / class_name
    split_dir = class_dir / split
    if not split_dir.is_dir():
        raise DatasetLayoutError(f"missing folder '{split_dir}'. Expected layout:\n{layout}")
    has_masks = (class_dir / "ground_truth").is_dir() or not masks_optional
    samples: list[Sample] = []
    for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        if split == "train" and defect != "good":
            raise DatasetLayoutError(
                f"'{defect_dir}': training folders must be 'good' only (unsupervised). Move these images "
                f"to '{class_dir / 'test' / defect}'."
            )
        for image in list_images(defect_dir):
            if defect == "good":
                samples.append(Sample(image, class_name, 0, "good"))
                continue
            mask = None
            if has_masks:
                mask = find_mask(class_dir / "ground_truth" / defect, image.stem, mask_suffixes)
                if mask is None:
                    expected = class_dir / "ground_truth" / defect / f"{image.stem}{mask_suffixes[0]}.png"
                    raise DatasetLayoutError(
                        f"defective image '{image}' has no mask: expected '{expected}'. Add the mask "
                        f"(all black if the defect cannot be outlined), or move the image out of test/."
                    )
            samples.append(Sample(image, class_name, 1, defect, mask))
    if not samples:
        raise DatasetLayoutError(
            f"class '{class_name}' has no images under '{split_dir}'. Add images, or leave the class out "
            f"with dataset.classes=[...]."
        )
    return samples
