"""Miniature dataset trees in each native layout, written with PIL into a test's tmp folder.

Every defective image `i` has its defect (and its mask) as a bright box whose position encodes `i`, so a
test can tell whether a mask was paired with the right image.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 48


def box(index: int, size: int = SIZE) -> tuple[slice, slice]:
    """The defect region of defective image `index`: an 8 x 8 box on row `index`."""
    top = 4 + 10 * (index % 4)
    return slice(top, top + 8), slice(4, 12)


def write_image(path: Path, size: tuple[int, int] = (SIZE, SIZE), mode: str = "RGB", index: int = -1) -> Path:
    """A grey image (W, H = size) in `mode`; with `index` >= 0, the box of that index is bright."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), 90, np.uint8)
    if index >= 0:
        pixels[box(index)] = 240
    img = Image.fromarray(pixels)
    if mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE)  # exact colours (the web palette rounds)
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def write_mask(
    path: Path, index: int, size: tuple[int, int] = (SIZE, SIZE), value: int = 255, soft: bool = False
) -> Path:
    """A single-channel mask with the box of `index` at `value`; `soft` adds a half-value rim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), np.uint8)
    if index >= 0:
        rows, cols = box(index)
        if soft:
            mask[rows.start - 2 : rows.stop + 2, cols.start - 2 : cols.stop + 2] = value // 3
        mask[rows, cols] = value
    Image.fromarray(mask).save(path)
    return path


def mvtec_tree(root: Path, classes: dict[str, dict[str, int]], train: int = 3, good: int = 2) -> Path:
    """<root>/<class>/{train/good, test/good, test/<defect>, ground_truth/<defect>/<id>_mask.png}.

    classes: {class: {defect: count}}. Masks are written in reverse order next to a hidden file and a mask
    without an image, which would shift a pairing by sorted position.
    """
    for name, defects in classes.items():
        for i in range(train):
            write_image(root / name / "train" / "good" / f"{i:03d}.png")
        for i in range(good):
            write_image(root / name / "test" / "good" / f"{i:03d}.png")
        for defect, n in defects.items():
            gt = root / name / "ground_truth" / defect
            write_mask(gt / "000_extra_mask.png", 3)
            (gt / ".000_mask.png").parent.mkdir(parents=True, exist_ok=True)
            (gt / ".000_mask.png").write_bytes(b"not a mask")
            for i in reversed(range(n)):
                write_image(root / name / "test" / defect / f"{i:03d}.png", index=i)
                write_mask(gt / f"{i:03d}_mask.png", i)
    return root


def visa_raw_tree(root: Path, counts: dict[str, tuple[int, int, int]]) -> Path:
    """Raw VisA: <class>/Data/Images/{Normal,Anomaly}/*.JPG, label masks with defect-class ids 1..2 in
    <class>/Data/Masks/Anomaly/*.png, and split_csv/1cls.csv. counts: {class: (train, test good, bad)}."""
    rows = []
    for name, (train, good, bad) in counts.items():
        for i in range(train + good):
            rel = f"{name}/Data/Images/Normal/{i:04d}.JPG"
            write_image(root / rel)
            rows.append([name, "train" if i < train else "test", "normal", rel, ""])
        for i in range(bad):
            rel = f"{name}/Data/Images/Anomaly/{i:03d}.JPG"
            mask_rel = f"{name}/Data/Masks/Anomaly/{i:03d}.png"
            write_image(root / rel, index=i)
            write_mask(root / mask_rel, i, value=1 + i % 2)  # defect-class ids: 1 or 2, not 255
            rows.append([name, "test", "anomaly", rel, mask_rel])
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    return root


def visa_converted_tree(root: Path, name: str, bad: int = 2) -> Path:
    """spot-diff's prepare_data.py output: 1cls/<class>/{train/good, test/good, test/bad,
    ground_truth/bad/<id>.png} (no _mask suffix), masks 0/255."""
    base = root / "1cls" / name
    for i in range(3):
        write_image(base / "train" / "good" / f"{i:04d}.JPG")
    write_image(base / "test" / "good" / "0100.JPG")
    for i in range(bad):
        write_image(base / "test" / "bad" / f"{i:03d}.JPG", index=i)
        write_mask(base / "ground_truth" / "bad" / f"{i:03d}.png", i)
    return root


REALIAD_IMAGE = "{c}_{s:04d}_{state}_C{v}_20231021{s:04d}{v}.jpg"


def realiad_tree(root: Path, name: str = "audiojack", nested: bool = False) -> Path:
    """realiad_256/<class>/{OK,NG/AK}/S<id>/... with two variants: realiad_jsons (samples 1-2 train OK,
    3 test OK, 4 test NG whose views C1, C2 show the defect and C3-C5 are labelled OK, C3 with a mask
    path) and realiad_jsons_sv (C1 only). The JSON lists the views interleaved, not grouped by sample."""
    images = root / "realiad_256"

    def entry(sample: int, view: int, defective_view: bool, ng: bool) -> dict:
        state = "NG_AK" if ng else "OK"
        folder = f"NG/AK/S{sample:04d}" if ng else f"OK/S{sample:04d}"
        file = REALIAD_IMAGE.format(c=name, s=sample, state=state, v=view)
        write_image(images / name / folder / file, index=view if defective_view else -1)
        mask = None
        if defective_view or (ng and view == 3):  # C3: a mask file, but anomaly_class OK -> normal
            mask = f"{folder}/{file[:-4]}.png"
            write_mask(images / name / mask, view if defective_view else -1)
        return {
            "category": name,
            "anomaly_class": "AK" if defective_view else "OK",
            "image_path": f"{folder}/{file}",
            "mask_path": mask,
        }

    views = range(1, 6)
    train = [entry(s, v, False, False) for v in views for s in (1, 2)]  # interleaved: S1C1, S2C1, S1C2...
    test = [entry(3, v, False, False) for v in views] + [entry(4, v, v <= 2, True) for v in views]
    test = test[::2] + test[1::2]
    for variant, keep in (("realiad_jsons", views), ("realiad_jsons_sv", (1,))):
        meta = {"prefix": f"{name}/" if variant == "realiad_jsons" else name, "normal_class": "OK"}
        folder = root / variant / variant if nested else root / variant
        folder.mkdir(parents=True, exist_ok=True)
        pick = [e for e in train + test if int(e["image_path"].split("_C")[1][0]) in keep]
        split = {
            "meta": meta,
            "train": [e for e in pick if e in train],
            "test": [e for e in pick if e in test],
        }
        (folder / f"{name}.json").write_text(json.dumps(split))
    return root
