"""Prediction on new images, calibrated thresholds and export (uad/predict.py, thresholds.py, export.py):
an unchanged test image scores as in evaluation, decisions follow the thresholds, the exported graph gives
the scores of mode=predict, and bad input gets one clear error."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import uad
from tests.conftest import compose_config
from uad import builders, pipeline
from uad.checkpoint import CheckpointError, read_checkpoint
from uad.data.datamodule import hold_back
from uad.data.samples import Sample
from uad.export import ExportError, export_graph, run_graph
from uad.predict import find_images
from uad.thresholds import Calibrator, calibrate, f1max_threshold, normalized_score

TINY = ["debug=tiny"]  # conf/debug/tiny.yaml


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


# -- thresholds -----------------------------------------------------------------------------------


def test_hold_back_is_deterministic_disjoint_and_never_takes_every_image():
    samples = [Sample(Path(f"{i:03d}.png"), "nut", 0, "good") for i in range(20)]
    kept, held = hold_back(samples, 0.1, "nut")
    assert len(held) == 2 and len(kept) == 18 and not set(kept) & set(held)
    assert hold_back(samples, 0.1, "nut") == (kept, held) and hold_back(samples, 0.1, "bolt")[1] != held
    assert hold_back(samples, 0.0, "nut") == (samples, [])
    assert len(hold_back(samples[:1], 0.5, "nut")[1]) == 0  # a class of one image keeps it for training
    assert len(hold_back(samples[:3], 0.01, "nut")[1]) == 1  # at least one when asked for any


def test_f1max_threshold_by_hand_and_refused_without_anomalies():
    # scores 0.9 (anomalous), 0.8 (normal), 0.7 (anomalous), 0.1 (normal): flagging {0.9} gives F1 2/3,
    # {0.9, 0.8, 0.7} gives 0.8, so the threshold lies between 0.7 and 0.1
    scores, labels = torch.tensor([0.9, 0.8, 0.7, 0.1]), torch.tensor([1, 0, 1, 0])
    assert f1max_threshold(scores, labels, "x") == pytest.approx(0.4)
    assert f1max_threshold(torch.tensor([0.5, 0.5]), torch.tensor([1, 1]), "x") < 0.5  # flag both
    with pytest.raises(ValueError, match=r"class 'nut' has no anomalous sample.*calibration\.rule=quantile"):
        f1max_threshold(scores, torch.zeros(4), "class 'nut'")
    with pytest.raises(ValueError, match=r"calibration\.root"):
        Calibrator(builders.build_protocol(compose_config(TINY)), rule="f1max")


def test_quantile_calibration_per_class_and_global():
    records = {
        "class_name": ["a"] * 5 + ["b"] * 5,
        "label": torch.zeros(10),
        "score": torch.arange(10.0),
        "map_max": torch.arange(10.0) * 2,
    }
    out = calibrate(records, "quantile", 0.5)
    assert out["image"] == {"global": 5.0, "per_class": {"a": 2.0, "b": 7.0}}  # order statistics, not means
    two = {"class_name": ["a", "a"], "label": torch.zeros(2), "score": torch.arange(2.0)}
    two["map_max"] = two["score"]
    assert calibrate(two, "quantile", 0.99)["image"]["global"] == 1.0  # no held-back image above it
    assert out["pixel"]["per_class"] == {"a": 4.0, "b": 14.0}
    assert out["counts"] == {"a": {"good": 5, "defective": 0}, "b": {"good": 5, "defective": 0}}


def test_f1max_calibration_separates_labelled_images_and_pixels():
    maps = torch.zeros(4, 8, 8)
    maps[1, :2, :2] = maps[3, 4:, 4:] = 1.0  # the defective images' defect pixels score 1, all else 0
    masks = maps > 0.5
    records = {
        "class_name": ["a", "a", "b", "b"],
        "label": torch.tensor([0, 1, 0, 1]),
        "score": torch.tensor([0.2, 0.8, 0.3, 0.9]),
        "map_max": maps.flatten(1).amax(1),
        "map": maps,
        "mask": masks,
    }
    out = calibrate(records, "f1max", 0.99)
    assert out["image"]["per_class"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.6)}
    assert out["image"]["global"] == pytest.approx(0.55) and out["pixel"]["global"] == pytest.approx(0.5)
    assert out["counts"]["a"] == {"good": 1, "defective": 1}


def test_normalized_score_is_one_half_at_the_threshold_and_increasing():
    assert normalized_score(2.0, 2.0) == 0.5
    assert (
        normalized_score(0.0, 2.0) == 0.0 < normalized_score(1.0, 2.0) < 0.5 < normalized_score(3.0, 2.0) < 1
    )


# -- bad input ------------------------------------------------------------------------------------


def test_empty_or_missing_inputs_and_checkpoints_get_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    with pytest.raises(ValueError, match="holds no image"):
        find_images(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="does not exist"):
        find_images(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="holds no image"):
        find_images(str(tmp_path / "empty" / "*.png"))
    with pytest.raises(CheckpointError, match="does not exist"):
        uad.load(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a uad checkpoint"):
        uad.load(tmp_path / "foreign.ckpt")


# -- end to end: train, predict, export ------------------------------------------------------------


def _new_images(test_images: list[str], classes: list[str], folder: Path) -> dict[str, str]:
    """Per-class folders of new images: test images copied unchanged (their score must not move), a JPEG,
    a grayscale, a resized and an RGBA version, an image of no trained class and an unreadable file.
    Returns {new path: the test image it was copied from} for the unchanged copies."""
    unchanged = {}
    for i, source in enumerate(test_images):
        class_name = next(c for c in classes if f"/{c}/" in source)
        target = folder / class_name / f"{i}_{Path(source).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        unchanged[str(target)] = source
        image = Image.open(source).convert("RGB")
        if i == 0:
            image.save(target.with_name(f"{i}_copy.jpg"), quality=90)
            image.convert("L").save(target.with_name(f"{i}_gray.png"))
            image.resize((150, 110)).save(target.with_name(f"{i}_resized.bmp"))
            image.convert("RGBA").save(target.with_name(f"{i}_rgba.png"))
            (folder / "elsewhere").mkdir()
            image.save(folder / "elsewhere" / "other.tiff")
            (target.parent / "broken.png").write_bytes(b"\x89PNG not really")
    return unchanged


@pytest.mark.slow
def test_predict_scores_test_images_as_evaluation_and_the_onnx_graph_as_predict(tmp_path, data_dir):
    train_cfg = compose_config([*TINY], output_dir=tmp_path / "run", data_dir=data_dir)
    results = pipeline.run(train_cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    thresholds = results["extra"]["thresholds"]
    classes = sorted(results["per_class"])
    assert thresholds["rule"] == "quantile" and "val_fraction=0.1" in thresholds["calibration_set"]
    assert sorted(thresholds["image"]["per_class"]) == classes
    assert all(c["good"] == 1 and c["defective"] == 0 for c in thresholds["counts"].values())  # 10 % of 6
    assert read_checkpoint(ckpt)["uad"]["thresholds"] == thresholds  # the checkpoint was re-saved

    evaluated = {r["path"]: float(r["score"]) for r in _rows(tmp_path / "run" / "predictions.csv")}
    picked = [p for c in classes for p in [q for q in evaluated if f"/{c}/" in q][:2]]
    unchanged = _new_images(picked, classes, tmp_path / "new")
    predict_cfg = compose_config(
        [
            *TINY,
            "mode=predict",
            f"ckpt_path={ckpt}",
            f"predict.input={tmp_path / 'new'}",
            "predict.save_maps=true",
        ],
        output_dir=tmp_path / "pred",
        data_dir=data_dir,
    )
    summary = pipeline.run(predict_cfg)
    rows = _rows(tmp_path / "pred" / "predictions.csv")
    assert len(rows) == len(find_images(str(tmp_path / "new"))[0]) and summary["errors"] == 1
    broken = [r for r in rows if r["error"]]
    assert broken[0]["path"].endswith("broken.png") and "cannot read image" in broken[0]["error"]
    scored = {r["path"]: r for r in rows if not r["error"]}
    for path, row in scored.items():
        expected_class = "unknown" if "elsewhere" in path else Path(path).parent.name
        table = thresholds["image"]
        threshold = table["per_class"].get(expected_class, table["global"])
        assert row["class"] == expected_class and float(row["threshold"]) == threshold
        assert row["decision"] == ("anomalous" if float(row["score"]) > threshold else "normal")
        assert (float(row["normalized_score"]) > 0.5) == (row["decision"] == "anomalous")
    for path, source in unchanged.items():
        assert _close(float(scored[path]["score"]), evaluated[source]), (path, source)
    name = Path(picked[0]).stem
    assert list((tmp_path / "pred" / "maps").glob(f"*{name}.npy")) and list(
        (tmp_path / "pred" / "masks").glob("*")
    )
    assert len(list((tmp_path / "pred" / "overlays").glob("*.png"))) == len(scored)

    model = uad.load(ckpt)  # the Python API gives the same numbers
    first = next(iter(unchanged))
    prediction = model.predict(first)
    assert prediction.class_name == Path(first).parent.name and _close(
        prediction.score, float(scored[first]["score"])
    )
    assert prediction.anomaly_map.shape == (64, 64) and prediction.mask is not None

    export_cfg = compose_config(
        [*TINY, "mode=export", f"ckpt_path={ckpt}"], output_dir=tmp_path / "export", data_dir=data_dir
    )
    pipeline.run(export_cfg)
    sidecar = json.loads((tmp_path / "export" / "model.json").read_text())
    assert (
        sidecar["input_size"] == 64 and sidecar["classes"] == classes and sidecar["thresholds"] == thresholds
    )
    paths = list(unchanged)
    images = np.stack(
        [
            model.transform.resized(np.asarray(Image.open(p).convert("RGB")), np.zeros((1, 1)))[0]
            for p in paths
        ]
    )
    _, scores = run_graph(tmp_path / "export" / "model.onnx", images.transpose(0, 3, 1, 2) / np.float32(255))
    for path, score in zip(paths, scores.tolist()):
        assert _close(score, float(scored[path]["score"]))


@pytest.mark.slow
def test_a_per_class_memory_bank_predicts_as_it_evaluated(tmp_path, data_dir):
    """PatchCore (the default) searches the bank of the image's class: a test image copied into a folder named
    after its class scores as in the evaluation; the same image of no known class searches every bank (its
    distance can only be smaller or equal)."""
    overrides = [*TINY, "method=patchcore"]
    pipeline.run(compose_config(overrides, output_dir=tmp_path / "run", data_dir=data_dir))
    evaluated = {r["path"]: float(r["score"]) for r in _rows(tmp_path / "run" / "predictions.csv")}
    picked = {p: Path(p).parts[-4] for p in evaluated}  # <root>/<class>/test/<defect>/<id>.png
    sources = list(picked)[:: max(1, len(picked) // 6)]
    for i, source in enumerate(sources):
        for folder in (picked[source], "elsewhere"):
            (tmp_path / "new" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, tmp_path / "new" / folder / f"{i}{Path(source).suffix}")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    predict = ["mode=predict", f"ckpt_path={ckpt}", f"predict.input={tmp_path / 'new'}"]
    pipeline.run(compose_config([*overrides, *predict], output_dir=tmp_path / "pred", data_dir=data_dir))
    rows = {
        (Path(r["path"]).parent.name, Path(r["path"]).stem): r
        for r in _rows(tmp_path / "pred" / "predictions.csv")
    }
    for i, source in enumerate(sources):
        known, unknown = rows[(picked[source], str(i))], rows[("elsewhere", str(i))]
        assert known["class"] == picked[source] and unknown["class"] == "unknown"
        assert _close(float(known["score"]), evaluated[source]), source
        assert float(unknown["score"]) <= float(known["score"]) + 1e-6


@pytest.mark.slow
def test_without_held_back_images_there_are_no_thresholds_until_predict_gives_one(tmp_path, data_dir):
    cfg = compose_config([*TINY, "dataset.val_fraction=0"], output_dir=tmp_path / "run", data_dir=data_dir)
    assert pipeline.run(cfg)["extra"]["thresholds"] is None
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    image = next((Path(cfg.paths.data_dir) / "synthetic").rglob("*.png"))
    prediction = uad.load(ckpt).predict(image)
    assert prediction.decision is None and prediction.threshold is None
    decided = uad.load(ckpt, threshold=prediction.score / 2).predict(image)
    assert decided.decision == "anomalous" and decided.normalized_score > 0.5


# -- export ---------------------------------------------------------------------------------------

EXPORT_CASES = {
    "featrec": ["method=featrec"],
    "uniad": [
        "method=uniad",
        "backbone.pretrained=false",
        "protocol.image_size=112",
        "method.model.neighbor_size=3",
    ],
    "dualad_he": [
        "method=dualad_he",
        "backbone.pretrained=false",
        "protocol.image_size=112",
        "method.model.neighbor_size=3",
    ],
    "dualad_ho": [
        "method=dualad_ho",
        "backbone.pretrained=false",
        "protocol.image_size=112",
        "method.model.neighbor_size=3",
    ],
    "dinomaly": [
        "method=dinomaly",
        "backbone=dinov2_vits14_reg",
        "backbone.pretrained=false",
        "protocol.image_size=64",
        "protocol.crop_size=56",
        "protocol.eval_size=56",
    ],
}


def _net(overrides: list[str]):
    cfg = compose_config([*TINY, *overrides])
    protocol = builders.build_protocol(cfg)
    torch.manual_seed(0)
    return builders.build_net(cfg, builders.build_encoder(cfg, protocol)), protocol


@pytest.mark.slow
@pytest.mark.parametrize("method", list(EXPORT_CASES))
def test_every_method_exports_to_onnx_and_torchscript_with_parity(method, tmp_path):
    net, protocol = _net(EXPORT_CASES[method])
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        errors = export_graph(net, protocol, tmp_path / f"model{suffix}", fmt, check_images=2)
        assert max(errors.values()) <= 1e-4
        images = np.random.default_rng(0).random((3, 3, protocol.input_size, protocol.input_size), np.float32)
        maps, scores = run_graph(tmp_path / f"model{suffix}", images)  # a batch size it was not traced at
        size = protocol.metric_size
        assert maps.shape == (3, size, size) and scores.shape == (3,)


@pytest.mark.slow
def test_an_export_that_differs_from_pytorch_is_refused_and_not_written(tmp_path, monkeypatch):
    net, protocol = _net(EXPORT_CASES["featrec"])
    monkeypatch.setattr("uad.export.relative_error", lambda got, ref: 1e-3)
    with pytest.raises(ExportError, match=r"differs from PyTorch by 0\.001.*nothing written"):
        export_graph(net, protocol, tmp_path / "model.onnx", "onnx", check_images=2)
    assert not list(tmp_path.iterdir())
