"""Scoring new images with a trained model: the Python API (`uad.load(path).predict(image)`) and
`mode=predict` (a folder, an image or a glob -> predictions.csv, overlays, optionally maps and masks).

An image goes through the decoding (`uad.data.dataset.decode_image`), input transform (`InputTransform`)
and scoring (`uad.inference.Scorer`: the protocol's `maps_for_eval` and `image_scores`) that evaluation
uses, so an unchanged test image scores as it did in the training run's `predictions.csv`. Decisions use
the thresholds calibrated at the end of training (`uad.thresholds`), or `predict.threshold=`.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from uad.builders import build_protocol
from uad.callbacks.visualize import image_at, overlay_figure
from uad.checkpoint import load_module
from uad.data.dataset import decode_image, pil_to_rgb
from uad.data.samples import IMAGE_SUFFIXES, DatasetLayoutError
from uad.errors import UserError
from uad.inference import Scorer
from uad.methods.base import UNKNOWN_CLASS
from uad.report.evidence import PredictGallery
from uad.thresholds import normalized_score
from uad.utils.io import atomic_write, write_text
from uad.utils.logging import get_logger

log = get_logger(__name__)
UNKNOWN = "unknown"  # the class of an image outside the trained classes: the global thresholds apply
CSV_COLUMNS = (
    "path",
    "class",
    "score",
    "threshold",
    "decision",
    "normalized_score",
    "overlay",
    "map",
    "error",
)
ImageInput = str | Path | np.ndarray | Image.Image


class PredictInputError(UserError, ValueError):
    """`predict.input` (or `ckpt_path`) names nothing to score."""


@dataclass
class Prediction:
    """One image's result. anomaly_map: (h, w) float32 at the protocol's evaluation size; decision is
    "anomalous" iff score > threshold, None (as threshold) when the model has no threshold."""

    score: float
    decision: str | None
    anomaly_map: np.ndarray
    class_name: str = UNKNOWN
    threshold: float | None = None
    normalized_score: float | None = None
    pixel_threshold: float | None = None
    path: str = ""

    @property
    def mask(self) -> np.ndarray | None:
        """(h, w) bool: the map above the pixel threshold (None without one)."""
        return None if self.pixel_threshold is None else self.anomaly_map > self.pixel_threshold


class Model:
    """A trained uad network with its input transform, scoring rule, classes and thresholds.

    threshold / pixel_threshold: override the calibrated image / pixel thresholds for every class.
    """

    def __init__(
        self,
        module: Any,
        cfg: DictConfig,
        device: str | None = None,
        threshold: float | None = None,
        pixel_threshold: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.protocol = build_protocol(cfg)
        self.transform = self.protocol.input
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.scorer = Scorer(module.net.to(self.device).eval(), self.protocol)
        self.classes: list[str] = list(module.extra.get("classes") or [])
        self.thresholds: dict[str, Any] | None = module.extra.get("thresholds")
        self.threshold_override = threshold
        self.pixel_threshold_override = pixel_threshold

    @classmethod
    def load(cls, path: str | Path, cfg: DictConfig | None = None, **kwargs: Any) -> Model:
        """The model of a uad checkpoint (`last.ckpt`); `CheckpointError` names a missing or foreign file."""
        module, cfg = load_module(path, cfg)
        return cls(module, cfg, **kwargs)

    @property
    def has_thresholds(self) -> bool:
        return self.threshold_override is not None or self.thresholds is not None

    def threshold(self, class_name: str, level: str = "image") -> float | None:
        """The `level` ("image" or "pixel") threshold of a class (the global one for unknown classes)."""
        override = self.threshold_override if level == "image" else self.pixel_threshold_override
        if override is not None:
            return float(override)
        if self.thresholds is None:
            return None
        table = self.thresholds[level]
        return table["per_class"].get(class_name, table["global"])

    def class_of(self, path: Path, root: Path | None = None) -> str:
        """The nearest folder above `path` (up to `root`) named after a trained class, else `unknown`."""
        for folder in path.parents:
            if folder.name in self.classes:
                return folder.name
            if root is None or folder == root or root not in folder.parents:
                break
        return UNKNOWN

    def image_tensor(self, image: ImageInput) -> Tensor:
        """A path, PIL image or uint8 array (H, W[, 3|4]) -> (3, S, S) normalised, as in evaluation."""
        if isinstance(image, (str, Path)):
            array = decode_image(image)
        elif isinstance(image, Image.Image):
            array = pil_to_rgb(image)
        else:
            array = pil_to_rgb(Image.fromarray(np.asarray(image)))
        return self.transform.image(array)

    @torch.no_grad()
    def predict_tensors(
        self, images: Tensor, class_names: Sequence[str], paths: Sequence[str] | None = None
    ) -> list[Prediction]:
        """(N, 3, S, S) transformed images -> one `Prediction` each."""
        ids = [self.classes.index(n) if n in self.classes else UNKNOWN_CLASS for n in class_names]
        class_id = torch.tensor(ids, device=self.device)  # the banks a per-class network searches
        maps, scores = self.scorer(images.to(self.device), class_id)  # (N, h, w), (N,)
        out = []
        for i, name in enumerate(class_names):
            score = float(scores[i])
            threshold = self.threshold(name)
            out.append(
                Prediction(
                    score=score,
                    decision=None if threshold is None else ("anomalous" if score > threshold else "normal"),
                    anomaly_map=maps[i].cpu().numpy(),
                    class_name=name,
                    threshold=threshold,
                    normalized_score=None if threshold is None else normalized_score(score, threshold),
                    pixel_threshold=self.threshold(name, "pixel"),
                    path=paths[i] if paths else "",
                )
            )
        return out

    def predict(self, image: ImageInput, class_name: str | None = None) -> Prediction:
        """Score one image (a path, a PIL image or a uint8 array); `class_name` picks its thresholds (by
        default the class a path's folder names, else the global ones)."""
        if class_name is None:
            class_name = self.class_of(Path(image)) if isinstance(image, (str, Path)) else UNKNOWN
        path = str(image) if isinstance(image, (str, Path)) else ""
        return self.predict_tensors(self.image_tensor(image)[None], [class_name], [path])[0]


def load(path: str | Path, device: str | None = None, threshold: float | None = None) -> Model:
    """`uad.load("last.ckpt")`: a trained model ready to `predict(image_or_path)`."""
    return Model.load(path, device=device, threshold=threshold)


def find_images(spec: str) -> tuple[list[Path], Path]:
    """The images named by `predict.input` (a file, a folder searched recursively, or a glob), sorted, and
    the root their classes are read below. An input with no image is an error that says what was read."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path], path.parent
    if path.is_dir():
        files, root = walk_files(path), path
    elif any(c in spec for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        root = Path(*_until_magic(path.parts))
    else:
        raise PredictInputError(f"predict.input '{spec}' does not exist; give an image, a folder or a glob")
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not images:
        raise PredictInputError(
            f"predict.input '{spec}' holds no image ({len(files)} other files); images end in "
            f"{sorted(IMAGE_SUFFIXES)}"
        )
    return images, root


def walk_files(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted, following symlinked folders (each real folder once, so a link
    loop ends)."""
    files, seen = [], set()
    for current, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        files += [Path(current) / n for n in names if (Path(current) / n).is_file()]
    return sorted(files)


def _until_magic(parts: Sequence[str]) -> list[str]:
    """The leading path parts of a glob that hold no wildcard: the folder it searches below."""
    out = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        out.append(part)
    return out


def output_names(paths: Sequence[Path], root: Path) -> list[str]:
    """One file name per image, unique within the run: the path below the input root with folders joined
    by '__' (`x/y.png` -> `x__y`); a name taken already gets the extension (`good.jpg` -> `good-jpg`), then
    a number. predictions.csv lists each image's overlay and map."""
    names: list[str] = []
    taken: set[str] = set()
    for path in paths:
        relative = path.relative_to(root) if root in path.parents else Path(path.name)
        base = "__".join(relative.with_suffix("").parts)
        name, extension, number = base, path.suffix.lstrip(".").lower(), 1
        while name in taken:
            name = f"{base}-{extension}" if number == 1 else f"{base}-{extension}-{number}"
            number += 1
        taken.add(name)
        names.append(name)
    return names


def predict(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """`mode=predict`: score every image of `predict.input` with the model of `ckpt_path`; write
    predictions.csv (+ overlays/, and maps/, masks/ with predict.save_maps=true) into `output_dir`,
    and the gallery of report.html (report_data.npz)."""
    options = cfg.predict
    if not cfg.get("ckpt_path"):
        raise PredictInputError("mode=predict needs ckpt_path=<run folder>/checkpoints/last.ckpt")
    if not options.get("input"):
        raise PredictInputError("mode=predict needs predict.input=<image, folder or glob>")
    paths, root = find_images(str(options.input))
    model = Model.load(
        cfg.ckpt_path,
        cfg,
        device=options.get("device"),
        threshold=options.get("threshold"),
        pixel_threshold=options.get("pixel_threshold"),
    )
    if not model.has_thresholds:
        log.warning(
            "'%s' has no calibrated thresholds (trained with dataset.val_fraction=0): scores only, no "
            "decisions; give predict.threshold=<image score> (and predict.pixel_threshold=) to decide",
            cfg.ckpt_path,
        )
    fixed_class = options.get("class")
    if fixed_class and model.classes and fixed_class not in model.classes:
        log.warning(
            "predict.class '%s' is not a trained class %s: global thresholds", fixed_class, model.classes
        )
    rows: list[dict[str, Any]] = []
    gallery = PredictGallery()  # the highest-scoring images, for report.html (uad.report)
    batch_size = int(options.get("batch_size") or 16)
    out_names = dict(zip(paths, output_names(paths, root)))
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch"):
        chunk, tensors = [], []
        for path in paths[start : start + batch_size]:
            try:  # any failure of one image (unreadable, a decompression bomb, a dangling link) is its row
                tensors.append(model.image_tensor(path))
                chunk.append(path)
            except Exception as err:
                message = str(err) if isinstance(err, DatasetLayoutError) else f"{type(err).__name__}: {err}"
                log.warning("skipping %s: %s", path, message)
                rows.append({"path": str(path), "class": "", "error": message})
        if not chunk:
            continue
        names = [model.class_of(p, root) if not fixed_class else str(fixed_class) for p in chunk]
        images = torch.stack(tensors)  # (B, 3, S, S)
        predictions = model.predict_tensors(images, names, [str(p) for p in chunk])
        for path, image, prediction in zip(chunk, images, predictions):
            rows.append(
                _row(prediction) | _save_outputs(prediction, image, out_names[path], output_dir, options)
            )
            gallery.add(prediction, image)
    csv_path = write_text(output_dir / "predictions.csv", _csv(rows))
    gallery.save(output_dir)
    errors = sum(bool(r.get("error")) for r in rows)
    anomalous = sum(r.get("decision") == "anomalous" for r in rows)
    log.info(
        "%d images scored (%d anomalous, %d unreadable) -> %s",
        len(rows) - errors,
        anomalous,
        errors,
        csv_path,
    )
    return {"images": len(rows) - errors, "anomalous": anomalous, "errors": errors, "csv": str(csv_path)}


def _row(p: Prediction) -> dict[str, Any]:
    return {
        "path": p.path,
        "class": p.class_name,
        "score": repr(p.score),
        "threshold": "" if p.threshold is None else repr(p.threshold),
        "decision": p.decision or "",
        "normalized_score": "" if p.normalized_score is None else f"{p.normalized_score:.6f}",
        "error": "",
    }


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _save_outputs(
    p: Prediction, image: Tensor, name: str, output_dir: Path, options: DictConfig
) -> dict[str, str]:
    """The overlay PNG (colour scale 0 .. 2 x the pixel threshold, so the threshold is mid-scale), and with
    save_maps the raw map (.npy) and the binary mask (PNG, 0/255). Returns the CSV's overlay and map cells
    (paths relative to the run folder)."""
    mask, written = p.mask, {}
    if options.get("save_maps"):
        atomic_write(output_dir / "maps" / f"{name}.npy", lambda h: np.save(h, p.anomaly_map), mode="wb")
        written["map"] = f"maps/{name}.npy"
        if mask is not None:
            png = Image.fromarray(mask.astype(np.uint8) * 255)
            atomic_write(output_dir / "masks" / f"{name}.png", lambda h: png.save(h, format="png"), mode="wb")
    if not options.get("overlays", True):
        return written
    import matplotlib.pyplot as plt

    if p.pixel_threshold is not None and p.pixel_threshold > 0:
        vmin, vmax = 0.0, 2 * p.pixel_threshold
    else:
        vmin, vmax = (float(v) for v in np.quantile(p.anomaly_map, [0.01, 0.999]))
    title = f"{p.class_name} / {Path(p.path).name} / score {p.score:.4g} / {p.decision or 'no threshold'}"
    fig = overlay_figure(
        image_at(image, p.anomaly_map.shape[-1]),
        p.anomaly_map,
        mask if mask is not None else np.zeros_like(p.anomaly_map, dtype=bool),
        vmin,
        vmax,
        title,
        mask_title="predicted mask (white)",
    )
    atomic_write(
        output_dir / "overlays" / f"{name}.png", lambda h: fig.savefig(h, dpi=90, format="png"), mode="wb"
    )
    plt.close(fig)
    return written | {"overlay": f"overlays/{name}.png"}
