"""VisA: the raw tree with the official split CSV, or the converted 1cls tree."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

from uad.data.readers.registry import Catalog, Splits, official_counts, reader
from uad.data.readers.tree import tree_catalog
from uad.data.samples import (
    DatasetLayoutError,
    Sample,
    tree_classes,
)
from uad.utils.logging import get_logger

log = get_logger(__name__)


VISA_COUNTS = official_counts("visa")  # 8,659 train / 962 good + 1,200 defective test

VISA_LAYOUT = """\
  raw (as published):  <root>/<class>/Data/Images/{Normal,Anomaly}/<id>.JPG
                       <root>/<class>/Data/Masks/Anomaly/<id>.png
                       <root>/split_csv/1cls.csv   (from github.com/amazon-science/spot-diff)
  or converted:        <root>/1cls/<class>/{train/good, test/good, test/bad, ground_truth/bad/<id>.png}"""
VISA_CSV_COLUMNS = ["object", "split", "label", "image", "mask"]


@reader(
    "visa",
    "VisA",
    VISA_LAYOUT,
    "VisA is published at https://github.com/amazon-science/spot-diff (CC BY 4.0; the split CSVs are in "
    "that repository's split_csv/).",
    VISA_COUNTS,
)
def read_visa(root: Path, split_csv: str | None = None) -> Catalog:
    """The raw tree through the official split CSV (no second copy on disk), else the converted tree
    (`<root>/1cls/` or `<root>` itself) whose masks are `<id>.png` or `<id>_mask.png`."""
    csv_path = Path(split_csv).expanduser() if split_csv else root / "split_csv" / "1cls.csv"
    if split_csv or csv_path.is_file():
        return _visa_raw(root, csv_path)
    tree = root / "1cls" if (root / "1cls").is_dir() else root
    classes = tree_classes(tree)
    if not classes:
        raise DatasetLayoutError(
            f"VisA root '{root}' has neither 'split_csv/1cls.csv' nor class folders. Expected:\n{VISA_LAYOUT}"
        )
    return tree_catalog(tree, classes, mask_suffixes=("", "_mask"), layout=VISA_LAYOUT)


def _visa_raw(root: Path, csv_path: Path) -> Catalog:
    if not csv_path.is_file():
        raise DatasetLayoutError(
            f"VisA split file '{csv_path}' does not exist. Download split_csv/1cls.csv from "
            f"https://github.com/amazon-science/spot-diff into '{root / 'split_csv'}'."
        )
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or list(rows[0]) != VISA_CSV_COLUMNS:
        raise DatasetLayoutError(
            f"'{csv_path}' is not a VisA split file: its header must be {','.join(VISA_CSV_COLUMNS)}"
        )
    by_class: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_class.setdefault(row["object"], []).append(row)
    present = sorted(c for c in by_class if (root / c).is_dir())
    missing = sorted(set(by_class) - set(present))
    if missing:
        log.info("VisA: %s listed in '%s' but not under '%s'", missing, csv_path.name, root)
    return {c: partial(_visa_class, root, csv_path, c, by_class[c]) for c in present}


def _visa_class(root: Path, csv_path: Path, class_name: str, rows: list[dict[str, str]]) -> Splits:
    splits = Splits([], [])
    for row in rows:
        image = root / row["image"]
        if not image.is_file():
            raise DatasetLayoutError(
                f"'{csv_path}' lists '{row['image']}' (class {class_name}), but '{image}' does not exist. "
                f"Restore the file from the VisA archive."
            )
        if row["split"] not in ("train", "test") or row["label"] not in ("normal", "anomaly"):
            raise DatasetLayoutError(
                f"'{csv_path}', row for '{row['image']}': split must be train|test and label normal|anomaly"
            )
        if row["label"] == "normal":
            sample = Sample(image, class_name, 0, "good")
        else:
            mask = root / row["mask"] if row["mask"] else None
            if mask is None or not mask.is_file():
                raise DatasetLayoutError(
                    f"defective VisA image '{image}' has no mask ('{csv_path}' gives '{row['mask']}'). "
                    f"Restore the mask from the VisA archive."
                )
            sample = Sample(image, class_name, 1, "bad", mask, mask_kind="labels")
        (splits.train if row["split"] == "train" else splits.test).append(sample)
    return splits
