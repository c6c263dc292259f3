"""Every bad input gets one clear error that names the file (or key) and the fix; nothing is dropped
silently."""

from __future__ import annotations

import json

import pytest

from tests.helpers.data_trees import mvtec_tree, realiad_tree, visa_raw_tree, write_image, write_mask
from tests.unit.data.test_data_layouts import datamodule
from uad.data import DatasetLayoutError


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("mvtec", r"(?s)MVTec AD root .* does not exist.*ground_truth/<defect>/<id>_mask.png.*mvtec\.com"),
        ("mpdd", r"(?s)MPDD root .* does not exist.*github\.com/stepanje/MPDD"),
        ("visa", r"(?s)VisA root .* does not exist.*split_csv/1cls\.csv.*amazon-science/spot-diff"),
        ("realiad", r"(?s)Real-IAD root .* does not exist.*realiad_jsons.*realiad4ad\.github\.io"),
        ("folder", r"(?s)folder root .* does not exist.*train/good"),
    ],
)
def test_missing_root_shows_the_layout_and_where_to_get_it(tmp_path, dataset, expected):
    with pytest.raises(DatasetLayoutError, match=expected):
        datamodule(tmp_path, dataset, tmp_path / "nowhere")


def test_unknown_class_lists_the_available_ones(tmp_path):
    root = mvtec_tree(tmp_path / "m", {"bottle": {"crack": 1}, "grid": {"bent": 1}})
    with pytest.raises(DatasetLayoutError, match=r"\['botle'\] not found .* Available: \['bottle', 'grid'\]"):
        datamodule(tmp_path, "mvtec", root, "dataset.strict=false", "dataset.classes=[botle]")


def test_unknown_dataset_and_unknown_option(tmp_path):
    root = mvtec_tree(tmp_path / "m", {"bottle": {"crack": 1}})
    with pytest.raises(DatasetLayoutError, match=r"dataset.reader 'mvtech' is not one of .*'mvtec'"):
        datamodule(tmp_path, "mvtec", root, "dataset.reader=mvtech")
    with pytest.raises(DatasetLayoutError, match=r"'mvtec' has no option\(s\) \['views'\]"):
        datamodule(tmp_path, "mvtec", root, "+dataset.views=[C1]")


def test_defective_image_without_mask(tmp_path):
    root = mvtec_tree(tmp_path / "m", {"bottle": {"crack": 2}})
    (root / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(
        DatasetLayoutError, match=r"'.*test/crack/001.png' has no mask: expected '.*001_mask.png'"
    ):
        datamodule(tmp_path, "mvtec", root, "dataset.strict=false")


def test_mask_of_another_size(tmp_path):
    root = mvtec_tree(tmp_path / "m", {"bottle": {"crack": 1}})
    write_mask(root / "bottle" / "ground_truth" / "crack" / "000_mask.png", 0, size=(40, 48))
    dm = datamodule(tmp_path, "mvtec", root, "dataset.strict=false")
    with pytest.raises(
        DatasetLayoutError, match=r"mask '.*000_mask.png' is 40x48 but its image '.*000.png' is 48x48"
    ):
        dm.test_set[dm.test_set.samples.index(next(s for s in dm.test_set.samples if s.label))]


@pytest.mark.parametrize("what", ["image", "mask"])
def test_truncated_or_unreadable_file(tmp_path, what):
    root = mvtec_tree(tmp_path / "m", {"bottle": {"crack": 1}})
    path = root / "bottle" / ("test/crack/000.png" if what == "image" else "ground_truth/crack/000_mask.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    dm = datamodule(tmp_path, "mvtec", root, "dataset.strict=false", "dataset.check_images=false")
    index = next(i for i, s in enumerate(dm.test_set.samples) if s.label)
    with pytest.raises(DatasetLayoutError, match=rf"cannot read {what} '{path}'.*(truncated).*[Rr]eplace"):
        dm.test_set[index]
    path.write_bytes(b"this is text")
    with pytest.raises(DatasetLayoutError, match=rf"cannot read {what} '{path}'"):
        dm.test_set[index]


@pytest.mark.parametrize("suffix", [".png", ".jpg", "_mask.png"])
def test_a_broken_test_image_is_reported_at_set_up_before_training(tmp_path, suffix):
    root = mvtec_tree(tmp_path / "m", {"bottle": {"crack": 1}})
    kind, path = "image", root / "bottle" / "test" / "good" / "000.png"
    if suffix == "_mask.png":
        kind, path = "mask", root / "bottle" / "ground_truth" / "crack" / "000_mask.png"
    if suffix == ".jpg":
        from PIL import Image

        new = path.with_suffix(".jpg")
        Image.open(path).convert("RGB").save(new, quality=90)
        path.unlink()
        path = new
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(
        DatasetLayoutError, match=rf"1 file\(s\) cannot be read:\n  cannot read {kind} '{path}'"
    ):
        datamodule(tmp_path, "mvtec", root, "dataset.strict=false")


def test_unreadable_file_also_fails_when_caching(tmp_path):
    root = mvtec_tree(tmp_path / "m", {"bottle": {"crack": 1}})
    (root / "bottle" / "train" / "good" / "001.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DatasetLayoutError, match=r"cannot read image '.*train/good/001.png'"):
        datamodule(tmp_path, "mvtec", root, "dataset.strict=false", "dataset.cache=true")


def test_empty_class(tmp_path):
    root = mvtec_tree(tmp_path / "m", {"bottle": {"crack": 1}, "grid": {"bent": 1}})
    for image in (root / "grid" / "train" / "good").iterdir():
        image.unlink()
    with pytest.raises(DatasetLayoutError, match=r"class 'grid' has no images under '.*grid/train'"):
        datamodule(tmp_path, "mvtec", root, "dataset.strict=false")


def test_defect_folder_in_train_and_stray_files(tmp_path, caplog):
    root = mvtec_tree(tmp_path / "m", {"bottle": {"crack": 1}})
    (root / "bottle" / "train" / "good" / "notes.txt").write_text("x")
    with caplog.at_level("WARNING"):
        datamodule(tmp_path, "mvtec", root, "dataset.strict=false")
    assert any("skipping 1 files that are not images (notes.txt)" in r.message for r in caplog.records)
    write_image(root / "bottle" / "train" / "crack" / "000.png")
    with pytest.raises(DatasetLayoutError, match=r"train/crack': training folders must be 'good' only"):
        datamodule(tmp_path, "mvtec", root, "dataset.strict=false")


def test_visa_csv_problems(tmp_path):
    root = visa_raw_tree(tmp_path / "v", {"candle": (2, 1, 1)})
    csv_path = root / "split_csv" / "1cls.csv"
    lines = csv_path.read_text().splitlines()
    (root / "candle" / "Data" / "Masks" / "Anomaly" / "000.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"defective VisA image '.*Anomaly/000.JPG' has no mask"):
        datamodule(tmp_path, "visa", root, "dataset.strict=false")
    (root / "candle" / "Data" / "Images" / "Normal" / "0001.JPG").unlink()
    with pytest.raises(
        DatasetLayoutError, match=r"lists 'candle/Data/Images/Normal/0001.JPG'.*does not exist"
    ):
        datamodule(tmp_path, "visa", root, "dataset.strict=false")
    csv_path.write_text("\n".join(["image,label", *lines[1:]]))
    with pytest.raises(DatasetLayoutError, match=r"'.*1cls.csv' is not a VisA split file"):
        datamodule(tmp_path, "visa", root, "dataset.strict=false")
    with pytest.raises(DatasetLayoutError, match=r"VisA split file '.*other.csv' does not exist"):
        datamodule(tmp_path, "visa", root, f"dataset.split_csv={root / 'other.csv'}")


def test_realiad_problems(tmp_path):
    root = realiad_tree(tmp_path / "r")
    with pytest.raises(DatasetLayoutError, match=r"realiad_1024' does not exist .*found \['realiad_256'"):
        datamodule(tmp_path, "realiad", root)
    ok = "dataset.images=realiad_256"
    with pytest.raises(DatasetLayoutError, match=r"realiad_jsons_fuiad_0.1' does not exist.*Unzip"):
        datamodule(tmp_path, "realiad", root, ok, "dataset.variant=realiad_jsons_fuiad_0.1")
    split = root / "realiad_jsons" / "audiojack.json"
    original = split.read_text()
    (root / "realiad_jsons" / "toaster.json").write_text(original)  # a class name outside the 30
    with pytest.raises(DatasetLayoutError, match=r"'toaster' is not a Real-IAD class"):
        datamodule(tmp_path, "realiad", root, ok, "dataset.classes=[toaster]")
    data = json.loads(original)
    data["test"][0]["image_path"] = "OK/S0003/renamed.jpg"
    split.write_text(json.dumps(data))
    with pytest.raises(DatasetLayoutError, match=r"json': file name '.*renamed.jpg' has no Real-IAD"):
        datamodule(tmp_path, "realiad", root, ok)
    data["test"][0]["image_path"] = "OK/S0003/audiojack_0003_OK_C9_1.jpg"
    split.write_text(json.dumps(data))
    with pytest.raises(DatasetLayoutError, match=r"1 files listed in '.*audiojack.json' are missing"):
        datamodule(tmp_path, "realiad", root, ok)
    data["test"][0] = {"image_path": data["test"][0]["image_path"]}
    split.write_text(json.dumps(data))
    with pytest.raises(DatasetLayoutError, match=r"audiojack.json': entry .* lacks image_path or"):
        datamodule(tmp_path, "realiad", root, ok, "dataset.classes=[audiojack]")
    split.write_text(json.dumps({"train": []}))
    with pytest.raises(DatasetLayoutError, match=r"audiojack.json' is not a Real-IAD split file"):
        datamodule(tmp_path, "realiad", root, ok, "dataset.classes=[audiojack]")
