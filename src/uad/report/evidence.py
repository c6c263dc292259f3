"""What a report needs beyond results.json and predictions.csv, saved into the run folder at the end of
evaluation (`report_data.npz`, written atomically) so that `python -m uad.report RUN_DIR` rebuilds the page
without the model or the data:

- per class, the PRO curve up to the protocol's FPR limit (`pro/<class>/fpr`, `pro/<class>/pro`; from the
  rank-space binned sweep of `uad.metrics.functional.pro_curve`, thinned to at most 400 points: for the
  plot only, the AUPRO in results.json stays exact);
- per class, the gallery: the highest-scoring normal images (false alarms first) and the lowest-scoring
  defective ones (misses first), each as image (uint8), anomaly map (float16), ground-truth mask at a
  thumbnail size, with score, label, defect and path; and the class's fixed colour scale (`scale/<class>`:
  1st and 99.9th percentile of its maps).

`mode=predict` keeps a similar gallery (`PredictGallery`): the highest-scoring predicted images.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from uad.metrics.functional import pro_curve
from uad.metrics.records import EvalRecords
from uad.utils.io import atomic_write
from uad.utils.logging import get_logger

log = get_logger(__name__)

EVIDENCE_FILE = "report_data.npz"
THUMBNAIL = 128  # gallery pixels per side
PRO_BINS = 2048  # rank-space bins of the plotted PRO curve
PRO_POINTS = 400


def _thumbnail(tensor: torch.Tensor, mode: str) -> torch.Tensor:
    """(h, w) or (3, h, w) -> the same at THUMBNAIL x THUMBNAIL (smaller inputs kept as they are)."""
    if tensor.shape[-1] <= THUMBNAIL and tensor.shape[-2] <= THUMBNAIL:
        return tensor
    batched = tensor.float()[None] if tensor.dim() == 3 else tensor.float()[None, None]
    kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    out = F.interpolate(batched, size=(THUMBNAIL, THUMBNAIL), mode=mode, **kwargs)
    return out[0] if tensor.dim() == 3 else out[0, 0]


def image_uint8(image: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(3, H, W) ImageNet-normalised -> (h, w, 3) uint8 at `size`, to lie under a map of that size."""
    from uad.callbacks.visualize import denormalise

    resized = F.interpolate(image.float()[None], size=size, mode="bilinear", align_corners=False)[0]
    return (denormalise(resized) * 255).round().astype(np.uint8)


def thin(
    x: np.ndarray, y: np.ndarray, limit: float, points: int = PRO_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """The curve's points with x <= limit (the end interpolated at x = limit), at most `points` of them."""
    end = float(np.interp(limit, x, y))
    inside = x < limit
    x, y = np.r_[x[inside], limit], np.r_[y[inside], end]
    if len(x) > points:
        keep = np.unique(np.r_[np.linspace(0, len(x) - 1, points).round().astype(int), len(x) - 1])
        x, y = x[keep], y[keep]
    return x, y


def _class_scale(maps: torch.Tensor) -> tuple[float, float]:
    values = maps.float().flatten()
    values = values[torch.randperm(len(values))[:200_000]]  # a sample: plenty for two percentiles
    low, high = (float(q) for q in torch.quantile(values, torch.tensor([0.01, 0.999])))
    return low, high


def gallery_rows(scores: torch.Tensor, labels: torch.Tensor, per_kind: int) -> list[tuple[int, str]]:
    """(row, kind) of a class's gallery: the `per_kind` highest-scoring normals ("false alarm" candidates,
    highest first) and the `per_kind` lowest-scoring defectives ("miss" candidates, lowest first)."""
    normal = torch.nonzero(labels == 0).flatten()
    defective = torch.nonzero(labels == 1).flatten()
    top = normal[torch.argsort(scores[normal], descending=True, stable=True)][:per_kind]
    low = defective[torch.argsort(scores[defective], stable=True)][:per_kind]
    return [(int(i), "normal") for i in top] + [(int(i), "defective") for i in low]


def save_run_evidence(
    output_dir: str | Path,
    records: EvalRecords,
    fpr_limit: float,
    image_of: Callable[[int], torch.Tensor] | None = None,
    per_kind: int = 4,
) -> Path:
    """Write `report_data.npz` for the evaluated `records`; `image_of(dataset index)` gives a test image
    (3, H, W) as the network saw it (None: the gallery shows maps on grey)."""
    arrays: dict[str, np.ndarray] = {"fpr_limit": np.float64(fpr_limit)}
    gallery: list[dict[str, Any]] = []
    classes = list(dict.fromkeys(records.class_name))
    for name in classes:
        sel = torch.nonzero(records.of_class(name)).flatten()
        maps, masks = records.map[sel], records.mask[sel]
        curve = pro_curve(maps, masks, bins=PRO_BINS)
        if curve is not None:
            fpr, pro = thin(curve[0].numpy(), curve[1].numpy(), fpr_limit)
            arrays[f"pro/{name}/fpr"], arrays[f"pro/{name}/pro"] = fpr, pro
        arrays[f"scale/{name}"] = np.array(_class_scale(maps))
        for row, kind in gallery_rows(records.score[sel], records.label[sel], per_kind):
            i = int(sel[row])
            amap, mask = _thumbnail(records.map[i], "bilinear"), _thumbnail(records.mask[i], "nearest") > 0.5
            index = int(records.index[i])
            image = image_of(index) if image_of is not None else None
            gallery.append(
                {
                    "image": _image_or_grey(image, tuple(amap.shape)),
                    "map": amap.numpy().astype(np.float16),
                    "mask": mask.numpy(),
                    "score": float(records.score[i]),
                    "label": int(records.label[i]),
                    "index": index,
                    "class": name,
                    "defect": records.defect[i],
                    "path": records.path[i],
                    "kind": kind,
                }
            )
    arrays.update(_stack_gallery(gallery))
    return atomic_write(
        Path(output_dir) / EVIDENCE_FILE, lambda h: np.savez_compressed(h, **arrays), mode="wb"
    )


def _image_or_grey(image: torch.Tensor | None, size: tuple[int, int]) -> np.ndarray:
    return image_uint8(image, size) if image is not None else np.full((*size, 3), 128, np.uint8)


def _stack_gallery(items: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One array per field (`gallery/<field>`), one row per gallery image."""
    if not items:
        return {}
    return {f"gallery/{key}": np.stack([np.asarray(item[key]) for item in items]) for key in items[0]}


def load_evidence(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays of a folder's `report_data.npz`; None where the run predates it."""
    path = Path(run_dir) / EVIDENCE_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def gallery_items(evidence: Mapping[str, np.ndarray] | None) -> list[dict[str, Any]]:
    """The gallery as one dict per image (its saved fields, without the `gallery/` prefix)."""
    if not evidence or "gallery/score" not in evidence:
        return []
    keys = [k.split("/", 1)[1] for k in evidence if k.startswith("gallery/")]
    return [{k: evidence[f"gallery/{k}"][i] for k in keys} for i in range(len(evidence["gallery/score"]))]


class PredictGallery:
    """The `limit` highest-scoring images of a `mode=predict` run, kept as thumbnails while it scores
    (a bounded heap: memory does not grow with the number of images)."""

    def __init__(self, limit: int = 48) -> None:
        self.limit = limit
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._order = itertools.count()

    def add(self, prediction: Any, image: torch.Tensor) -> None:
        """`prediction`: a `uad.predict.Prediction`; `image`: its (3, S, S) normalised input."""
        if len(self._heap) >= self.limit and prediction.score <= self._heap[0][0]:
            return
        amap = _thumbnail(torch.from_numpy(np.asarray(prediction.anomaly_map, dtype=np.float32)), "bilinear")
        mask = prediction.mask
        mask = (
            np.zeros(amap.shape, bool)
            if mask is None
            else (_thumbnail(torch.from_numpy(mask), "nearest") > 0.5).numpy()
        )
        item = {
            "image": image_uint8(image, tuple(amap.shape)),
            "map": amap.numpy().astype(np.float16),
            "mask": mask,
            "score": prediction.score,
            "class": prediction.class_name,
            "path": prediction.path,
            "decision": prediction.decision or "",
            "threshold": np.nan if prediction.threshold is None else prediction.threshold,
            "pixel_threshold": np.nan if prediction.pixel_threshold is None else prediction.pixel_threshold,
        }
        entry = (prediction.score, next(self._order), item)
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def save(self, output_dir: str | Path) -> Path:
        items = [item for _, _, item in sorted(self._heap, key=lambda e: -e[0])]
        arrays = _stack_gallery(items)
        return atomic_write(
            Path(output_dir) / EVIDENCE_FILE, lambda h: np.savez_compressed(h, **arrays), mode="wb"
        )


def record_evaluation(output_dir: Path, records: EvalRecords, fpr_limit: float, trainer: Any) -> Path | None:
    """The Evaluator's one call: save the evidence of this test run, the gallery's images read from the
    trainer's test set. A failure is logged, never raised: the results are already written."""
    dataset = getattr(getattr(trainer, "datamodule", None), "test_set", None)
    image_of = (lambda index: dataset[index]["image"]) if dataset is not None else None
    start, cpu = time.perf_counter(), time.process_time()
    try:
        path = save_run_evidence(output_dir, records, fpr_limit, image_of)
    except Exception as err:
        log.error("report data not saved: %s: %s", type(err).__name__, err, exc_info=True)
        return None
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    log.info("report data: %s (%.1f s, %.1f CPU-s)", path, wall, cpu)
    return path
