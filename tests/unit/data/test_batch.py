"""`Batch` is enforced where it is made: every item a dataset yields is checked by `batch_item`."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.data_trees import SIZE, mvtec_tree
from tests.unit.data.test_data_layouts import datamodule
from uad.data.batch import Batch, batch_item


def _values(**changes):
    values = {
        "image": torch.zeros(3, 8, 8),
        "mask": torch.zeros(1, 8, 8, dtype=torch.uint8),
        "label": 0,
        "has_mask": False,
        "index": 0,
        "class_id": 0,
        "class_name": "bottle",
        "defect": "good",
        "path": "a.png",
        "sample_key": "",
        "view": "",
    }
    return {**values, **changes}


def test_an_item_with_every_key_passes_and_a_missing_or_unknown_key_is_named():
    assert set(batch_item(**_values())) == Batch.__required_keys__
    values = _values(labels=1)
    del values["has_mask"]
    with pytest.raises(TypeError, match=r"lacks \['has_mask'\] and has unknown keys \['labels'\]"):
        batch_item(**values)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": torch.zeros(1, 8, 8)}, r"image must be \(3, H, W\) floating point, not \(1, 8, 8\)"),
        ({"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}, "image must be"),
        ({"mask": torch.zeros(1, 8, 8)}, r"mask must be \(1, 8, 8\) uint8, not \(1, 8, 8\) torch.float32"),
        ({"mask": torch.zeros(1, 4, 8, dtype=torch.uint8)}, r"mask must be \(1, 8, 8\) uint8"),
    ],
)
def test_an_image_or_mask_of_the_wrong_shape_or_type_is_refused(change, message):
    with pytest.raises(TypeError, match=message):
        batch_item(**_values(**change))


def test_the_dataset_yields_checked_items_that_collate_into_a_batch(tmp_path):
    root = mvtec_tree(tmp_path / "mvtec", {"bottle": {"crack": 1}})
    dm = datamodule(tmp_path, "mvtec", root, "dataset.strict=false")
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == Batch.__required_keys__
    assert batch["image"].shape[1:] == (3, SIZE, SIZE) and batch["mask"].dtype == torch.uint8
    assert batch["has_mask"].dtype == torch.bool and isinstance(batch["class_name"], list)
