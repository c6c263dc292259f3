"""The procedural default dataset: layout, masks that match the defects, determinism, caching."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from uad.data.samples import read_tree_split, tree_classes
from uad.data.synthetic import DEFECTS, SyntheticSpec, ensure_synthetic, generate_image

SPEC = SyntheticSpec(seed=3, image_size=96, train_per_class=3, test_good=2, test_per_defect=2)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return ensure_synthetic(tmp_path_factory.mktemp("synthetic"), SPEC)


def test_layout_is_mvtec_and_read_by_the_mvtec_loader(tree):
    assert set(tree_classes(tree)) == set(DEFECTS) and len(DEFECTS) >= 3
    for class_name, defects in DEFECTS.items():
        train = read_tree_split(tree, class_name, "train")
        test = read_tree_split(tree, class_name, "test")
        assert len(train) == SPEC.train_per_class and all(s.label == 0 for s in train)
        assert sum(s.label == 0 for s in test) == SPEC.test_good
        assert sorted({s.defect for s in test if s.label}) == sorted(defects)
        for sample in test:
            if sample.label:
                assert sample.mask_path.name == f"{sample.path.stem}_mask.png"
                assert sample.mask_path.parent.name == sample.defect
    manifest = json.loads((tree / "manifest.json").read_text())
    assert manifest["spec"]["seed"] == SPEC.seed


def test_a_texture_and_two_objects_with_the_five_defect_kinds():
    kinds = {d for defects in DEFECTS.values() for d in defects}
    assert {"scratch", "hole", "missing", "colour"} <= kinds
    assert {"stain", "contamination"} & kinds


@pytest.mark.parametrize("class_name,defect", [(c, d) for c, ds in DEFECTS.items() for d in ds])
def test_masks_match_the_defects(class_name, defect):
    """The defective image equals its clean twin outside the mask, and differs inside most of it."""
    for index in range(3):
        image, mask = generate_image(SPEC, class_name, "test", defect, index)
        clean, empty = generate_image(SPEC, class_name, "test", defect, index, with_defect=False)
        assert not empty.any() and mask.sum() >= 30
        changed = np.abs(image.astype(int) - clean.astype(int)).max(axis=2) > 0
        assert not (changed & ~mask).any(), "pixels changed outside the mask"
        assert (changed & mask).sum() >= 0.5 * mask.sum(), "most of the mask must be visibly changed"


def test_masks_on_disk_are_binary_and_sized_like_their_image(tree):
    for sample in read_tree_split(tree, "nut", "test"):
        if sample.mask_path:
            mask = np.asarray(Image.open(sample.mask_path))
            assert set(np.unique(mask)) <= {0, 255} and mask.max() == 255
            assert mask.shape == Image.open(sample.path).size[::-1]


def test_deterministic_by_seed():
    a, ma = generate_image(SPEC, "pill", "test", "crack", 1)
    b, mb = generate_image(SPEC, "pill", "test", "crack", 1)
    c, _ = generate_image(SyntheticSpec(seed=4, image_size=96), "pill", "test", "crack", 1)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)


def test_generated_once_then_reused(tree):
    manifest = tree / "manifest.json"
    before = manifest.stat().st_mtime_ns
    again = ensure_synthetic(tree.parent, SPEC)
    assert again == tree and manifest.stat().st_mtime_ns == before
    assert not [p for p in tree.parent.iterdir() if p.name.startswith(".")], "no temporary folder left"
