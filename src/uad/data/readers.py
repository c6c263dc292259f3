"""Dataset readers: one decorated function per dataset layout, turning a root folder into a catalog.

A reader returns `{class name: loader}`; a loader reads that class's `Splits` (train, test) on demand, so
choosing classes is cheap. `open_catalog` checks the root and the reader's options first; `check_counts`
compares what was read with the official numbers (`../shared/reference/data_metrics_frameworks.md` §1).
"""

from __future__ import annotations

import csv
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from uad.data.samples import (
    MVTEC_LAYOUT,
    DatasetLayoutError,
    Sample,
    read_tree_split,
    tree_classes,
)
from uad.utils.logging import get_logger

log = get_logger(__name__)


class Splits(NamedTuple):
    train: list[Sample]
    test: list[Sample]


Catalog = dict[str, Callable[[], Splits]]


@dataclass(frozen=True)
class Reader:
    """A registered layout: its reader, what the tree looks like, where it is published, official counts.

    counts: {class: (train good, test good, test defective)}; class_names: the official classes (the keys
    of `counts` when it is given).
    """

    name: str
    title: str
    read: Callable[..., Catalog]
    layout: str
    published: str
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()

    @property
    def options(self) -> tuple[str, ...]:
        """The reader's keyword options (`dataset.<option>` in the config)."""
        params = list(inspect.signature(self.read).parameters.values())[1:]
        return tuple(p.name for p in params)


READERS: dict[str, Reader] = {}


def reader(
    name: str,
    title: str,
    layout: str,
    published: str,
    counts: dict[str, tuple[int, int, int]] | None = None,
    class_names: tuple[str, ...] = (),
) -> Callable[[Callable[..., Catalog]], Callable[..., Catalog]]:
    """Register `fn(root, **options) -> Catalog` as reader `name` (a dataset config's `reader:`)."""

    def register(fn: Callable[..., Catalog]) -> Callable[..., Catalog]:
        READERS[name] = Reader(
            name, title, fn, layout, published, dict(counts or {}), class_names or tuple(counts or ())
        )
        return fn

    return register


def get_reader(name: str) -> Reader:
    """The registered reader `name` (the config's `dataset.reader`); an unknown one lists the readers."""
    if name not in READERS:
        raise DatasetLayoutError(
            f"dataset.reader '{name}' is not one of {sorted(READERS)}. Set `reader:` in your "
            f"conf/dataset/<name>.yaml, or dataset.reader=<one of them> on the command line."
        )
    return READERS[name]


def open_catalog(name: str, root: Path, options: dict[str, Any] | None = None) -> Catalog:
    """The classes found under `root` by reader `name`, each with its loader; one clear error otherwise."""
    spec = get_reader(name)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise DatasetLayoutError(
            f"dataset.reader '{name}' has no option(s) {unknown}; its options are {list(spec.options)}"
        )
    if not root.is_dir():
        raise DatasetLayoutError(
            f"{spec.title} root '{root}' does not exist. Set dataset.root to the folder that holds:\n"
            f"{spec.layout}\n{spec.published}"
        )
    catalog = spec.read(root, **options)
    if not catalog:
        raise DatasetLayoutError(f"no {spec.title} classes found under '{root}'. Expected:\n{spec.layout}")
    return catalog


def select_classes(catalog: Catalog, requested: list[str] | None, root: Path) -> list[str]:
    """The requested classes (all, sorted, when None); an unknown one lists the available classes."""
    available = sorted(catalog)
    if requested is None:
        return available
    unknown = [c for c in requested if c not in catalog]
    if unknown:
        raise DatasetLayoutError(
            f"dataset.classes: {unknown} not found under '{root}'. Available: {available}"
        )
    return list(requested)


def count(splits: Splits) -> tuple[int, int, int]:
    """(train, test good, test defective) of one class."""
    good = sum(s.label == 0 for s in splits.test)
    return len(splits.train), good, len(splits.test) - good


def check_counts(name: str, found: dict[str, Splits], strict: bool) -> None:
    """Compare each class with the official numbers; strict raises naming every class that differs,
    otherwise (a partial copy) the differences are logged."""
    spec = get_reader(name)
    problems = []
    for class_name, splits in found.items():
        if spec.class_names and class_name not in spec.class_names:
            problems.append(
                f"'{class_name}' is not a {spec.title} class (those are {list(spec.class_names)})"
            )
        elif class_name in spec.counts and count(splits) != spec.counts[class_name]:
            have, want = count(splits), spec.counts[class_name]
            problems.append(
                f"'{class_name}' has {have[0]} train / {have[1]} good test / {have[2]} defective test "
                f"images; the official copy has {want[0]} / {want[1]} / {want[2]}"
            )
    if not problems:
        if spec.counts and len(found) < len(spec.counts):
            log.info("%s: %d of its %d classes selected", spec.title, len(found), len(spec.counts))
        return
    text = f"{spec.title} differs from the official dataset: " + "; ".join(problems)
    if strict:
        raise DatasetLayoutError(
            f"{text}. Re-download the class, or set dataset.strict=false to accept a partial copy."
        )
    log.warning("dataset.strict=false, accepting a partial copy. %s", text)


# --- MVTec AD, MPDD, the synthetic data and users' folders: the MVTec tree -------------------------------

MVTEC_COUNTS = {
    "bottle": (209, 20, 63),
    "cable": (224, 58, 92),
    "capsule": (219, 23, 109),
    "carpet": (280, 28, 89),
    "grid": (264, 21, 57),
    "hazelnut": (391, 40, 70),
    "leather": (245, 32, 92),
    "metal_nut": (220, 22, 93),
    "pill": (267, 26, 141),
    "screw": (320, 41, 119),
    "tile": (230, 33, 84),
    "toothbrush": (60, 12, 30),
    "transistor": (213, 60, 40),
    "wood": (247, 19, 60),
    "zipper": (240, 32, 119),
}  # zhiyuanyou/UniAD:data/MVTec-AD/{train,test}.json: 3,629 train / 467 good + 1,258 defective test

MPDD_COUNTS = {
    "bracket_black": (289, 32, 47),
    "bracket_brown": (185, 26, 51),
    "bracket_white": (110, 30, 30),
    "connector": (128, 30, 14),
    "metal_plate": (54, 26, 71),
    "tubes": (122, 32, 69),
}  # boschresearch/defect-aware-prompt-optimization:data/mpdd/meta.json: 888 / 176 + 282


def tree_catalog(root: Path, classes: list[str], **kwargs: Any) -> Catalog:
    """Loaders for classes of an MVTec-style tree under `root`."""

    def load(class_name: str) -> Splits:
        return Splits(
            read_tree_split(root, class_name, "train", **kwargs),
            read_tree_split(root, class_name, "test", **kwargs),
        )

    return {c: partial(load, c) for c in classes}


@reader(
    "mvtec",
    "MVTec AD",
    MVTEC_LAYOUT,
    "MVTec AD is published at https://www.mvtec.com/company/research/datasets/mvtec-ad (CC BY-NC-SA 4.0).",
    MVTEC_COUNTS,
)
@reader(
    "mpdd",
    "MPDD",
    MVTEC_LAYOUT,
    "MPDD is published at https://github.com/stepanje/MPDD (CC BY-NC-SA 4.0).",
    MPDD_COUNTS,
)
@reader(
    "synthetic",
    "synthetic",
    MVTEC_LAYOUT,
    "The synthetic data is generated by uad (uad/data/synthetic.py) on first use.",
)
def read_mvtec_tree(root: Path) -> Catalog:
    """MVTec AD, MPDD and the synthetic set share one layout: every class folder under `root`."""
    return tree_catalog(root, tree_classes(root))


FOLDER_LAYOUT = """\
  <root>/<class>/train/good/<name>.<png|jpg|bmp|tif>      (one folder per class; or <root> is one class)
  <root>/<class>/test/good/<name>.<ext>
  <root>/<class>/test/<defect>/<name>.<ext>
  <root>/<class>/ground_truth/<defect>/<name>_mask.png    (optional; `<name>.png` also pairs)"""


@reader("folder", "folder", FOLDER_LAYOUT, "Your own images: one class folder, or a root of class folders.")
def read_folder(root: Path) -> Catalog:
    """Users' data: `root` is one class (it has train/ and test/) or holds class folders. A class without a
    ground_truth/ folder gets image labels only (its pixel metrics are undefined), logged once."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        root, classes = root.parent, [root.name]
    else:
        classes = tree_classes(root)
    tree = tree_catalog(root, classes, mask_suffixes=("_mask", ""), layout=FOLDER_LAYOUT, masks_optional=True)

    def load(class_name: str) -> Splits:
        if not (root / class_name / "ground_truth").is_dir():
            log.warning(
                "folder class '%s' has no ground_truth/ folder: image labels only, no pixel metrics",
                class_name,
            )
        return tree[class_name]()

    return {c: partial(load, c) for c in classes}


# --- VisA: the raw tree with the official split CSV, or the converted 1cls tree ---------------------------

VISA_COUNTS = {
    "candle": (900, 100, 100),
    "capsules": (542, 60, 100),
    "cashew": (450, 50, 100),
    "chewinggum": (453, 50, 100),
    "fryum": (450, 50, 100),
    "macaroni1": (900, 100, 100),
    "macaroni2": (900, 100, 100),
    "pcb1": (904, 100, 100),
    "pcb2": (901, 100, 100),
    "pcb3": (905, 101, 100),
    "pcb4": (904, 101, 100),
    "pipe_fryum": (450, 50, 100),
}  # amazon-science/spot-diff:split_csv/1cls.csv: 8,659 train / 962 good + 1,200 defective test

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


# --- Real-IAD: JSON split variants over one image variant ------------------------------------------------

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
