"""The real images in ../shared/realdata load through `dataset=mvtec` as a partial copy, with the counts
stated in its SOURCES.md, and train + evaluate in one unified run together with the synthetic classes."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.conftest import REALDATA, compose_config
from tests.helpers.data_trees import SIZE
from tests.unit.data.test_data_layouts import datamodule, split_counts
from uad.data import DatasetLayoutError
from uad.pipeline import run

pytestmark = pytest.mark.skipif(not (REALDATA / "SOURCES.md").is_file(), reason="no ../shared/realdata")

# ../shared/realdata/SOURCES.md, "Classes": train good / test good / test defective, and defects
SOURCES_COUNTS = {"bottle": (20, 8, 12), "grid": (25, 3, 11), "hazelnut_toy": (20, 6, 17)}
SOURCES_DEFECTS = {
    "bottle": {"broken_large": 4, "broken_small": 4, "contamination": 4},
    "grid": {"bent": 3, "broken": 2, "glue": 2, "metal_contamination": 2, "thread": 2},
    "hazelnut_toy": {"colour": 17},
}
ODD_SIZE = ("hazelnut_toy", "train", "good", "01.png")  # 439x448, the others 448x448


def test_realdata_loads_as_a_partial_mvtec_copy(tmp_path):
    dm = datamodule(tmp_path, "mvtec", REALDATA, "dataset.strict=false")
    assert split_counts(dm) == SOURCES_COUNTS
    for name, defects in SOURCES_DEFECTS.items():
        found = Counter(s.defect for s in dm.test_set.samples if s.class_name == name and s.label)
        assert found == defects
    for i, sample in enumerate(dm.test_set.samples):  # every mask still has defect pixels (SOURCES.md)
        item = dm.test_set[i]
        assert item["image"].shape[0] == 3  # grid is grayscale on disk
        assert bool(item["mask"].any()) == bool(sample.label), sample.path
    odd = [i for i, s in enumerate(dm.train_set.samples) if s.path.parts[-4:] == ODD_SIZE]
    assert len(odd) == 1 and dm.train_set[odd[0]]["image"].shape[1:] == (SIZE, SIZE)


def test_realdata_is_not_the_official_mvtec(tmp_path):
    with pytest.raises(
        DatasetLayoutError, match=r"'bottle' has 20 train.*'grid' has 25.*'hazelnut_toy' is no"
    ):
        datamodule(tmp_path, "mvtec", REALDATA)


@pytest.mark.slow
def test_unified_run_over_realdata_and_synthetic_classes(tmp_path, data_dir):
    """One model for the three real and three synthetic classes: a folder of class links read by
    `dataset=folder`, one epoch at 64 px."""
    synthetic = compose_config(["debug=tiny"], output_dir=tmp_path / "gen", data_dir=data_dir)
    from uad.data.synthetic import SyntheticSpec, ensure_synthetic

    tree = ensure_synthetic(data_dir / "synthetic", SyntheticSpec(**synthetic.dataset.synthetic))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for folder in [*(REALDATA / c for c in SOURCES_COUNTS), *(p for p in tree.iterdir() if p.is_dir())]:
        (mixed / folder.name).symlink_to(folder, target_is_directory=True)
    cfg = compose_config(
        [
            "debug=tiny",
            "dataset=folder",
            f"dataset.root={mixed}",
        ],
        output_dir=tmp_path / "run",
        data_dir=data_dir,
    )
    results = run(cfg)
    assert sorted(results["per_class"]) == sorted([*SOURCES_COUNTS, "nut", "pill", "weave"])
    assert results["counts"]["hazelnut_toy"] == {"good": 6, "defective": 17}
    for metrics in results["per_class"].values():
        assert 0.0 <= metrics["I-AUROC"] <= 1.0 and 0.0 <= metrics["P-AUROC"] <= 1.0
