"""Real-IAD: JSON split variants over one image variant."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

from uad.data.readers.registry import Catalog, Splits, reader
from uad.data.samples import (
    DatasetLayoutError,
    Sample,
)

REALIAD_CLASSES = (
    "audiojack", "bottle_cap", "button_battery", "end_cap", "eraser", "fire_hood", "mint", "mounts", "pcb",
    "phone_battery", "plastic_nut", "plastic_plug", "porcelain_doll", "regulator", "rolled_strip_base",
    "sim_card_set", "switch", "tape", "terminalblock", "toothbrush", "toy", "toy_brick", "transistor1",
    "u_block", "usb", "usb_adaptor", "vcpill", "wooden_beads", "woodstick", "zipper",
)  # fmt: skip  # Tencent/AnomalyDetection_Real-IAD:experiments/RealIAD-full/config.yaml
REALIAD_VARIANTS = (
    "realiad_jsons",
    "realiad_jsons_sv",
    "realiad_jsons_fuiad_0.0",
    "realiad_jsons_fuiad_0.1",
    "realiad_jsons_fuiad_0.2",
    "realiad_jsons_fuiad_0.4",
)
# The official sample key (Tencent/AnomalyDetection_Real-IAD:README.md, ADEval --sample_key_pat) and view.
REALIAD_KEY = re.compile(r"([a-zA-Z][a-zA-Z0-9_]*_[0-9]{4}_[A-Z][A-Z_]*[A-Z])_(C[0-9])_")
REALIAD_LAYOUT = """\
  <root>/realiad_1024/<class>/OK/S0001/<class>_0001_OK_C1_<time>.jpg     (or realiad_512, _256, _raw)
  <root>/realiad_1024/<class>/NG/<code>/S0002/<class>_0002_NG_..._C3_<time>.{jpg,png}
  <root>/realiad_jsons/<class>.json   (or realiad_jsons/realiad_jsons/<class>.json; also _sv, _fuiad_0.x)"""


@reader(
    "realiad",
    "Real-IAD",
    REALIAD_LAYOUT,
    "Real-IAD is published at https://realiad4ad.github.io/Real-IAD (Hugging Face REAL-IAD/Real-IAD, on "
    "request; CC BY-NC-SA 4.0).",
    class_names=REALIAD_CLASSES,
)
def read_realiad(
    root: Path,
    images: str = "realiad_1024",
    variant: str = "realiad_jsons",
    views: list[str | int] | None = None,
) -> Catalog:
    """`images`: the image folder (realiad_1024, realiad_512, realiad_256, realiad_raw); `variant`: the JSON
    split; `views`: keep only these cameras (e.g. [C1] or [1]), None = all five."""
    image_root = root / images
    if not image_root.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("realiad_"))
        raise DatasetLayoutError(
            f"Real-IAD image folder '{image_root}' does not exist (dataset.images={images}); found {found}. "
            f"Expected:\n{REALIAD_LAYOUT}"
        )
    json_dir = root / variant
    if (json_dir / variant).is_dir():  # the zip's own folder inside (Dinomaly and anomalib expect this)
        json_dir = json_dir / variant
    if not json_dir.is_dir():
        raise DatasetLayoutError(
            f"Real-IAD split folder '{json_dir}' does not exist (dataset.variant={variant}; the official "
            f"ones are {list(REALIAD_VARIANTS)}). Unzip {variant}.zip into '{root}'."
        )
    keep = {v if str(v).startswith("C") else f"C{v}" for v in views} if views else None
    return {p.stem: partial(_realiad_class, image_root, p, keep) for p in sorted(json_dir.glob("*.json"))}


def _realiad_class(image_root: Path, json_path: Path, views: set[str] | None) -> Splits:
    try:
        split_file = json.loads(json_path.read_text())
        prefix, normal = split_file["meta"]["prefix"], split_file["meta"].get("normal_class", "OK")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetLayoutError(
            f"'{json_path}' is not a Real-IAD split file (needs meta.prefix, train, test): {err!r}"
        ) from err
    splits = Splits([], [])
    for split, out in (("train", splits.train), ("test", splits.test)):
        for entry in split_file.get(split, []):
            sample = _realiad_sample(image_root, json_path, prefix, normal, entry)
            if views is None or sample.view in views:
                out.append(sample)
    listed = [p for s in splits.train + splits.test for p in (s.path, s.mask_path) if p is not None]
    missing = [p for p in listed if not p.is_file()]
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} files listed in '{json_path}' are missing under '{image_root}', e.g. "
            f"'{missing[0]}'. Check dataset.images, or restore the files."
        )
    return splits


def _realiad_sample(image_root: Path, json_path: Path, prefix: str, normal: str, entry: dict) -> Sample:
    """One view. Normal iff mask_path is null or anomaly_class is meta.normal_class (the official rule;
    the NG/ folder holds views where the defect is not visible, labelled normal)."""
    if not isinstance(entry, dict) or not {"image_path", "anomaly_class"} <= set(entry):
        raise DatasetLayoutError(
            f"'{json_path}': entry {entry!r} lacks image_path or anomaly_class (the Real-IAD schema: "
            f"category, anomaly_class, image_path, mask_path)."
        )
    image_path = entry["image_path"]
    match = REALIAD_KEY.search(Path(image_path).name)
    if match is None:
        raise DatasetLayoutError(
            f"'{json_path}': file name '{image_path}' has no Real-IAD sample key "
            f"(<class>_<4 digits>_<OK|NG..>_C<view>_...)."
        )
    is_normal = entry.get("mask_path") is None or entry["anomaly_class"] == normal
    return Sample(
        image_root / prefix / image_path,  # os.path.join(prefix, ...) in the official ExplicitDataset
        json_path.stem,
        0 if is_normal else 1,
        "good" if is_normal else entry["anomaly_class"],
        None if is_normal else image_root / prefix / entry["mask_path"],
        sample_key=match.group(1),
        view=match.group(2),
    )
