"""Sample records and the MVTec-AD layout reader (also MPDD and the synthetic data).

Layout: <root>/<class>/train/good/*, <root>/<class>/test/<good|defect>/*,
<root>/<class>/ground_truth/<defect>/<stem>_mask.png. Masks are paired to images by name, never by
sorted position; labels come from the folder name, never from mask content.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class DatasetLayoutError(ValueError):
    """The files on disk do not form the expected layout; the message names the path and the fix."""


@dataclass(frozen=True)
class Sample:
    """One image of a split. `label` is 0 for good, 1 for defective; `mask_path` is None for good images."""

    path: Path
    class_name: str
    label: int
    defect: str
    mask_path: Path | None = None
    sample_key: str = ""
    view: str = ""


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name; hidden files are not images."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


MVTEC_LAYOUT = """\
  <root>/<class>/train/good/<id>.png
  <root>/<class>/test/good/<id>.png
  <root>/<class>/test/<defect>/<id>.png
  <root>/<class>/ground_truth/<defect>/<id>_mask.png"""


def discover_mvtec_classes(root: Path) -> list[str]:
    """Class folders under `root`: those holding both train/ and test/."""
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset root '{root}' does not exist. Expected layout:\n{MVTEC_LAYOUT}")
    classes = sorted(p.name for p in root.iterdir() if (p / "train").is_dir() and (p / "test").is_dir())
    if not classes:
        raise DatasetLayoutError(
            f"no class folders (with train/ and test/) under '{root}'. Expected:\n{MVTEC_LAYOUT}"
        )
    return classes


def read_mvtec_split(root: Path, class_name: str, split: str) -> list[Sample]:
    """All samples of one class and split ("train" or "test") in the MVTec layout."""
    split_dir = root / class_name / split
    if not split_dir.is_dir():
        raise DatasetLayoutError(f"missing folder '{split_dir}'. Expected layout:\n{MVTEC_LAYOUT}")
    samples: list[Sample] = []
    for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        if split == "train" and defect != "good":
            raise DatasetLayoutError(f"'{defect_dir}': training folders must be 'good' only (unsupervised).")
        for image in list_images(defect_dir):
            if defect == "good":
                samples.append(Sample(image, class_name, 0, "good"))
                continue
            mask = root / class_name / "ground_truth" / defect / f"{image.stem}_mask.png"
            if not mask.is_file():
                raise DatasetLayoutError(
                    f"defective image '{image}' has no mask: expected '{mask}'. Add the mask, or move the "
                    f"image out of the test set."
                )
            samples.append(Sample(image, class_name, 1, defect, mask))
    if not samples:
        raise DatasetLayoutError(f"no images under '{split_dir}' (class '{class_name}', split '{split}').")
    return samples
