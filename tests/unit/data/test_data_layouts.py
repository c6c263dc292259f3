"""Each native layout, read through the real `conf/dataset/*.yaml`: splits, labels, mask pairing by name,
Real-IAD's normal rule, sample keys and view filter, and users' untidy folders."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import compose_config
from tests.helpers.data_trees import (
    SIZE,
    mvtec_tree,
    realiad_tree,
    visa_converted_tree,
    visa_raw_tree,
    write_image,
    write_mask,
)
from uad.builders import build_datamodule, build_protocol
from uad.data.readers import MPDD_COUNTS, VISA_COUNTS


def datamodule(tmp_path, dataset: str, root, *overrides: str, setup: bool = True):
    """The data module that `python run.py dataset=<dataset> dataset.root=<root> ...` builds."""
    cfg = compose_config(
        [
            f"dataset={dataset}",
            f"dataset.root={root}",
            "dataset.num_workers=0",
            "dataset.val_fraction=0",  # the reader's own counts: no training image held back
            f"protocol.image_size={SIZE}",
            *overrides,
        ],
        output_dir=tmp_path / "run",
        data_dir=tmp_path / "data",
    )
    dm = build_datamodule(cfg, build_protocol(cfg))
    if setup:
        dm.setup()
    return dm


def test_val_fraction_holds_back_training_images_per_class(tmp_path):
    root = mvtec_tree(tmp_path / "mvtec", {"bottle": {"crack": 1}, "grid": {"bent": 1}})
    dm = datamodule(tmp_path, "mvtec", root, "dataset.strict=false", "dataset.val_fraction=0.4")
    held = Counter(s.class_name for s in dm.heldout_set.samples)
    assert held == {"bottle": 1, "grid": 1} and not set(dm.heldout_set.samples) & set(dm.train_set.samples)
    assert len(dm.train_set) == 4 and all(s.label == 0 for s in dm.heldout_set.samples)


def split_counts(dm) -> dict[str, tuple[int, int, int]]:
    out = {}
    for name in dm.class_names:
        good = sum(s.class_name == name and s.label == 0 for s in dm.test_set.samples)
        bad = sum(s.class_name == name and s.label == 1 for s in dm.test_set.samples)
        out[name] = (sum(s.class_name == name for s in dm.train_set.samples), good, bad)
    return out


def assert_masks_pair_with_their_images(dataset) -> None:
    """Every defective item's mask is exactly the box its image shows (so it belongs to that image)."""
    checked = 0
    for i, sample in enumerate(dataset.samples):
        item = dataset[i]
        image_box = item["image"][0] > 0  # the bright box, ImageNet-normalised (grey 90 is below the mean)
        if sample.label == 1 and sample.mask_path is not None and item["mask"].any():
            assert torch.equal(item["mask"][0].bool(), image_box), sample.path
            checked += 1
        elif sample.label == 0:
            assert not item["mask"].any(), sample.path
    assert checked


def test_mvtec_tree_pairs_masks_by_name_not_by_position(tmp_path):
    root = mvtec_tree(tmp_path / "mvtec", {"bottle": {"crack": 3, "hole": 2}, "grid": {"bent": 2}})
    dm = datamodule(tmp_path, "mvtec", root, "dataset.strict=false")
    assert dm.class_names == ["bottle", "grid"]
    assert split_counts(dm) == {"bottle": (3, 2, 5), "grid": (3, 2, 2)}
    for s in dm.test_set.samples:
        if s.label:
            assert s.mask_path.name == f"{s.path.stem}_mask.png"
            assert s.mask_path.parent.name == s.defect
    assert Counter(s.defect for s in dm.test_set.samples) == {"good": 4, "crack": 3, "hole": 2, "bent": 2}
    assert_masks_pair_with_their_images(dm.test_set)
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape[1:] == (3, SIZE, SIZE) and batch["mask"].dtype == torch.uint8


def test_mvtec_class_subset_and_unified_training_set(tmp_path):
    root = mvtec_tree(tmp_path / "mvtec", {"bottle": {"crack": 1}, "grid": {"bent": 1}, "tile": {"oil": 1}})
    dm = datamodule(tmp_path, "mvtec", root, "dataset.strict=false", "dataset.classes=[tile,bottle]")
    assert dm.class_names == ["tile", "bottle"]
    assert {s.class_name for s in dm.train_set.samples} == {"tile", "bottle"}
    assert all(s.label == 0 and s.defect == "good" for s in dm.train_set.samples)
    assert dm.test_set[0]["class_id"] == 0 and dm.test_set[0]["class_name"] == "tile"


def test_mpdd_counts_are_checked_per_class(tmp_path):
    root = mvtec_tree(tmp_path / "mpdd", {"tubes": {"flattening": 2}})
    with pytest.raises(ValueError, match=r"'tubes' has 3 train / 2 good test / 2 defective.*122 / 32 / 69"):
        datamodule(tmp_path, "mpdd", root)
    dm = datamodule(tmp_path, "mpdd", root, "dataset.strict=false")
    assert split_counts(dm) == {"tubes": (3, 2, 2)}
    assert sum(c[0] for c in MPDD_COUNTS.values()) == 888
    assert sum(c[1] + c[2] for c in MPDD_COUNTS.values()) == 176 + 282


def test_count_check_passes_an_official_copy(tmp_path, monkeypatch):
    """A class whose counts equal the reference passes strict mode (counts shrunk to keep the tree tiny)."""
    from uad.data import readers

    root = mvtec_tree(tmp_path / "mpdd", {"tubes": {"flattening": 2}, "connector": {"parts_mismatch": 1}})
    spec = readers.READERS["mpdd"]
    counts = {**spec.counts, "tubes": (3, 2, 2), "connector": (3, 2, 1)}
    monkeypatch.setitem(readers.READERS, "mpdd", readers.Reader(**{**spec.__dict__, "counts": counts}))
    assert split_counts(datamodule(tmp_path, "mpdd", root)) == {"tubes": (3, 2, 2), "connector": (3, 2, 1)}
    counts["connector"] = (3, 2, 2)
    with pytest.raises(ValueError, match="'connector' has") as err:
        datamodule(tmp_path, "mpdd", root)
    assert "tubes" not in str(err.value)


def test_visa_raw_tree_through_the_official_csv(tmp_path):
    root = visa_raw_tree(tmp_path / "visa", {"candle": (4, 2, 3), "pcb1": (3, 1, 2)})
    dm = datamodule(tmp_path, "visa", root, "dataset.strict=false")
    assert split_counts(dm) == {"candle": (4, 2, 3), "pcb1": (3, 1, 2)}
    assert all(s.path.suffix == ".JPG" for s in dm.test_set.samples)
    assert {s.defect for s in dm.test_set.samples if s.label} == {"bad"}
    # raw masks hold class ids 1 and 2: every non-zero pixel is defective, whatever the threshold
    assert_masks_pair_with_their_images(dm.test_set)
    assert sum(c[0] for c in VISA_COUNTS.values()) == 8659
    assert sum(c[1] for c in VISA_COUNTS.values()) == 962


def test_visa_raw_tree_skips_classes_absent_on_disk(tmp_path):
    root = visa_raw_tree(tmp_path / "visa", {"candle": (2, 1, 1), "pcb1": (2, 1, 1)})
    for path in sorted((root / "pcb1").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "pcb1").rmdir()
    assert datamodule(tmp_path, "visa", root, "dataset.strict=false").class_names == ["candle"]


def test_visa_converted_1cls_tree(tmp_path):
    root = visa_converted_tree(tmp_path / "visa", "capsules")
    dm = datamodule(tmp_path, "visa", root, "dataset.strict=false")
    assert split_counts(dm) == {"capsules": (3, 1, 2)}
    assert all(s.mask_path.name == f"{s.path.stem}.png" for s in dm.test_set.samples if s.label)
    assert_masks_pair_with_their_images(dm.test_set)


@pytest.mark.parametrize("nested", [False, True], ids=["siblings", "nested"])
def test_realiad_multiview_split_labels_keys_and_views(tmp_path, nested):
    root = realiad_tree(tmp_path / "realiad", nested=nested)
    dm = datamodule(tmp_path, "realiad", root, "dataset.images=realiad_256")
    assert dm.class_names == ["audiojack"]
    assert len(dm.train_set) == 10
    test = dm.test_set.samples
    # the official rule: NG views without a mask, or labelled OK (C3 has a mask file), are normal
    labels = {(s.sample_key, s.view): s.label for s in test}
    assert labels == {
        **{("audiojack_0003_OK", f"C{v}"): 0 for v in range(1, 6)},
        **{("audiojack_0004_NG_AK", f"C{v}"): int(v <= 2) for v in range(1, 6)},
    }
    assert all(s.mask_path is None for s in test if s.label == 0)
    assert {s.defect for s in test if s.label} == {"AK"}
    # the JSON interleaves the views; keys come from the file name, so each key has its five views
    keys = Counter(s.sample_key for s in dm.train_set.samples + test)
    assert keys == {f"audiojack_000{i}_OK": 5 for i in (1, 2, 3)} | {"audiojack_0004_NG_AK": 5}
    item = dm.test_set[next(i for i, s in enumerate(test) if s.label)]
    assert item["sample_key"] == "audiojack_0004_NG_AK" and item["view"] in ("C1", "C2")
    assert_masks_pair_with_their_images(dm.test_set)


def test_realiad_labels_under_dinomaly_are_dinomalys(tmp_path):
    """Dinomaly's RealIADDataset (dataset.py): label = `anomaly_class != 'OK'`; the mask file is read only
    for those views, the others get zeros (C3 of the NG sample has a mask file but is labelled OK). Under
    protocol=dinomaly392 every test view gets that label and mask."""
    root = realiad_tree(tmp_path / "realiad", nested=True)
    overrides = ("dataset.images=realiad_256", "protocol=dinomaly392", "protocol.crop_size=null")
    dm = datamodule(tmp_path, "realiad", root, *overrides)
    split = json.loads((root / "realiad_jsons" / "realiad_jsons" / "audiojack.json").read_text())
    dinomaly = {e["image_path"]: (e["anomaly_class"] != "OK", e["mask_path"]) for e in split["test"]}
    assert len(dm.test_set) == len(dinomaly) == 10
    for i, sample in enumerate(dm.test_set.samples):
        label, _ = dinomaly[sample.path.relative_to(root / "realiad_256" / "audiojack").as_posix()]
        item = dm.test_set[i]
        assert item["label"] == label and bool(item["mask"].any()) == label
    assert any(not label and mask for label, mask in dinomaly.values())  # C3: a mask file, labelled OK


def test_realiad_single_view_variant_and_view_filter(tmp_path):
    root = realiad_tree(tmp_path / "realiad")
    images = "dataset.images=realiad_256"
    sv = datamodule(tmp_path, "realiad", root, images, "dataset.variant=realiad_jsons_sv")
    assert {s.view for s in sv.train_set.samples + sv.test_set.samples} == {"C1"}
    assert (len(sv.train_set), len(sv.test_set)) == (2, 2)
    filtered = datamodule(tmp_path, "realiad", root, "dataset.images=realiad_256", "dataset.views=[2,C5]")
    assert {s.view for s in filtered.test_set.samples} == {"C2", "C5"}
    assert len(filtered.train_set) == 4


def test_folder_of_untidy_factory_images(tmp_path, caplog):
    """Mixed sizes, grayscale/RGBA/palette, JPEG and PNG, soft masks, a defective image with an empty
    mask, and a class with no ground_truth at all."""
    root = tmp_path / "mine"
    write_image(root / "part" / "train" / "good" / "a.png", size=(64, 48))
    write_image(root / "part" / "train" / "good" / "b.jpg", size=(40, 56), mode="L")
    write_image(root / "part" / "train" / "good" / "c.png", mode="RGBA")
    write_image(root / "part" / "test" / "good" / "d.PNG", size=(50, 50), mode="P")
    write_image(root / "part" / "test" / "dent" / "e.png", index=1)
    write_mask(root / "part" / "ground_truth" / "dent" / "e_mask.png", 1, soft=True)
    write_image(root / "part" / "test" / "dent" / "f.jpeg", size=(60, 40), mode="L")
    write_mask(root / "part" / "ground_truth" / "dent" / "f.png", -1, size=(60, 40))  # empty; `<stem>.png`
    write_image(root / "tray" / "train" / "good" / "1.png")
    write_image(root / "tray" / "test" / "good" / "2.png")
    write_image(root / "tray" / "test" / "chip" / "3.png", index=0)
    with caplog.at_level("WARNING"):
        dm = datamodule(tmp_path, "folder", root, "protocol.mask_threshold=0.5")
        items = [dm.test_set[i] for i in range(len(dm.test_set))] + [dm.train_set[i] for i in range(4)]
    assert dm.class_names == ["part", "tray"]
    assert split_counts(dm) == {"part": (3, 1, 2), "tray": (1, 1, 1)}
    assert all(x["image"].shape == (3, SIZE, SIZE) for x in items)
    by_name = {x["path"].rsplit("/", 1)[1]: x for x in items}
    soft = by_name["e.png"]
    assert torch.equal(soft["mask"][0].bool(), soft["image"][0] > 0)  # the soft rim is below half the max
    assert by_name["f.jpeg"]["label"] == 1 and not by_name["f.jpeg"]["mask"].any()  # empty mask: defective
    assert by_name["3.png"]["label"] == 1 and not by_name["3.png"]["mask"].any()  # no ground_truth/
    assert sum("empty mask" in r.message for r in caplog.records) == 1
    assert sum("'tray' has no ground_truth" in r.message for r in caplog.records) == 1


def test_folder_root_can_be_a_single_class(tmp_path):
    root = mvtec_tree(tmp_path / "mine", {"widget": {"scratch": 2}})
    dm = datamodule(tmp_path, "folder", root / "widget")
    assert dm.class_names == ["widget"] and split_counts(dm) == {"widget": (3, 2, 2)}


@pytest.mark.parametrize(("threshold", "positives"), [(0.5, 64), (0.0, 144)])
def test_mask_threshold_is_configuration(tmp_path, threshold, positives):
    """A soft mask (core 255, rim 85): half the maximum keeps the 8x8 core; `> 0` (papers') the rim too."""
    root = tmp_path / "mine"
    write_image(root / "c" / "train" / "good" / "0.png")
    write_image(root / "c" / "test" / "cut" / "0.png", index=0)
    write_mask(root / "c" / "ground_truth" / "cut" / "0_mask.png", 0, soft=True)
    rule = "protocol.mask_rule=binarize_first"  # the default method's DualAD preset keeps only grey level 255
    dm = datamodule(tmp_path, "folder", root, rule, f"protocol.mask_threshold={threshold}")
    assert int(dm.test_set[0]["mask"].sum()) == positives


def test_cache_gives_the_same_batches(tmp_path):
    root = mvtec_tree(tmp_path / "mvtec", {"bottle": {"crack": 2}})
    plain = datamodule(tmp_path, "mvtec", root, "dataset.strict=false", "protocol.crop_size=40")
    cached = datamodule(
        tmp_path, "mvtec", root, "dataset.strict=false", "protocol.crop_size=40", "dataset.cache=true"
    )
    assert cached.test_set.cache is not None and plain.test_set.cache is None
    for i in range(len(plain.test_set)):
        a, b = plain.test_set[i], cached.test_set[i]
        assert a["image"].shape == (3, 40, 40)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_grayscale_and_rgba_become_rgb(tmp_path):
    from uad.data.dataset import load_image
    from uad.data.samples import Sample

    for mode in ("L", "RGBA", "P", "I;16"):
        path = tmp_path / f"{mode.replace(';', '')}.png"
        if mode == "I;16":
            Image.fromarray(np.full((8, 8), 257 * 90, np.uint16)).save(path)
        else:
            write_image(path, size=(8, 8), mode=mode)
        image = load_image(Sample(path, "c", 0, "good"))
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8
        assert abs(int(image[0, 0, 0]) - 90) <= 1, mode
