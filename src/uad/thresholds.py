"""Decision thresholds, calibrated at the end of training, so that a model can say normal or anomalous.

Two rules (`calibration.rule`):

- `quantile` (default): on the held-back normal images (`dataset.val_fraction` of each class's train/good,
  never trained on), the image threshold is the `calibration.quantile` quantile of their image scores and
  the pixel threshold the same quantile of their maps' maxima (so that about that fraction of normal images
  get an empty mask too). Per class, and one global threshold over all held-back images (for images of no
  known class). It needs no anomaly, and sets the false-alarm rate, not the miss rate.
- `f1max`: on a labelled validation folder (`calibration.root`, the dataset's layout; its test split), the
  thresholds that maximise F1 (images, and pixels). A class with no anomalous image is refused: F1 without
  positives would put the threshold below every score and flag everything (anomalib #3357, #2433).

The result (`module.extra["thresholds"]`: in the checkpoint, re-saved after calibration, and in
`results.json` under `extra.thresholds`) records the rule, the calibration set and its counts. With no
held-back images (the paper recipes train on every image: `dataset.val_fraction=0`) it is None and
`mode=predict` asks for `predict.threshold=`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from uad.errors import ConfigError
from uad.inference import Scorer, score_loader
from uad.metrics.protocol import EvalProtocol
from uad.utils.logging import get_logger

log = get_logger(__name__)
RULES = ("quantile", "f1max")


def normalized_score(score: float, threshold: float) -> float:
    """score / (score + threshold): 0.5 at the threshold, increasing, in [0, 1) for the non-negative scores
    of every method (distances and errors); comparable across classes whose scores have other scales."""
    if threshold <= 0:
        return float(score > threshold)
    return max(0.0, score) / (max(0.0, score) + threshold)


def quantile_threshold(values: Tensor, quantile: float) -> float:
    """The smallest of `values` with at least a `quantile` fraction of them at or below it (torch's
    "higher" quantile), so that `score > threshold` flags at most 1 - quantile of the calibration images.
    Linear interpolation would put the threshold below the largest calibration score and flag one image
    in n however high the quantile: half of them with two held-back images per class."""
    return float(torch.quantile(values.double().flatten(), quantile, interpolation="higher"))


def f1max_threshold(scores: Tensor, labels: Tensor, what: str) -> float:
    """The threshold t that maximises F1 of `score > t`: half-way between the lowest flagged score and the
    next lower one. Refuses a set without positives, where F1 is undefined (not "the minimum score")."""
    scores = scores.double().flatten()
    labels = labels.flatten().bool()
    positives = int(labels.sum())
    if positives == 0:
        raise ValueError(
            f"calibration.rule=f1max: {what} has no anomalous sample, so F1 is undefined and would flag "
            f"everything; give calibration.root a folder with defective images (and masks), or use "
            f"calibration.rule=quantile"
        )
    order = torch.argsort(scores, descending=True)
    ranked, hits = scores[order], labels[order].double()
    tp = torch.cumsum(hits, 0)
    f1 = 2 * tp / (torch.arange(1, len(ranked) + 1, dtype=torch.float64) + positives)
    last_of_tie = torch.ones_like(labels)  # a threshold can only fall between distinct scores
    last_of_tie[:-1] = ranked[:-1] != ranked[1:]
    best = int(torch.argmax(torch.where(last_of_tie, f1, torch.tensor(-1.0, dtype=torch.float64))))
    if best == len(ranked) - 1:
        return float(np.nextafter(ranked[-1].item(), -np.inf))
    return float((ranked[best] + ranked[best + 1]) / 2)


def calibrate(records: dict[str, Any], rule: str, quantile: float) -> dict[str, Any]:
    """Per-class and global image and pixel thresholds from `score_loader` records (with maps and masks
    for f1max)."""
    names = records["class_name"]
    classes = list(dict.fromkeys(names))
    groups = {c: torch.tensor([n == c for n in names]) for c in classes}
    groups_all = {**groups, None: torch.ones(len(names), dtype=torch.bool)}

    def image(sel: Tensor, what: str) -> float:
        if rule == "quantile":
            return quantile_threshold(records["score"][sel], quantile)
        return f1max_threshold(records["score"][sel], records["label"][sel], what)

    def pixel(sel: Tensor, what: str) -> float:
        if rule == "quantile":
            return quantile_threshold(records["map_max"][sel], quantile)
        return f1max_threshold(records["map"][sel], records["mask"][sel], f"the masks of {what}")

    out: dict[str, Any] = {}
    for level, fn in (("image", image), ("pixel", pixel)):
        values = {c: fn(sel, f"class '{c}'" if c else "the whole set") for c, sel in groups_all.items()}
        out[level] = {"global": values.pop(None), "per_class": values}
    labels = records["label"]
    out["counts"] = {
        c: {"good": int((labels[sel] == 0).sum()), "defective": int((labels[sel] == 1).sum())}
        for c, sel in groups.items()
    }
    return out


class Calibrator(Callback):
    """At the end of training: calibrate the thresholds, keep them and the trained classes in
    `module.extra` (so in the checkpoint) and re-save the run's checkpoint with them."""

    def __init__(
        self, protocol: EvalProtocol, rule: str = "quantile", quantile: float = 0.99, root: str | None = None
    ) -> None:
        if rule not in RULES:
            raise ConfigError(f"calibration.rule '{rule}' is not one of {RULES}")
        if not 0.0 < quantile <= 1.0:
            raise ConfigError(f"calibration.quantile must be in (0, 1]; got {quantile}")
        if rule == "f1max" and not root:
            raise ConfigError(
                "calibration.rule=f1max needs a labelled validation folder: calibration.root=/path (the "
                "dataset's layout; its test split with good and defective images is used)"
            )
        self.protocol = protocol
        self.rule = rule
        self.quantile = quantile
        self.root = root

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = trainer.datamodule
        pl_module.extra["classes"] = list(datamodule.class_names)
        pl_module.extra["thresholds"] = self.thresholds(datamodule, pl_module)
        for callback in trainer.checkpoint_callbacks:  # the file resume and predict read
            path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
            if path and Path(path).is_file():
                trainer.save_checkpoint(path)

    def thresholds(self, datamodule: Any, pl_module: LightningModule) -> dict[str, Any] | None:
        if self.rule == "quantile":
            dataset = datamodule.heldout_set
            source = f"held-back train/good images (dataset.val_fraction={datamodule.val_fraction})"
        else:
            dataset = datamodule.labelled_set(self.root)
            source = f"test split of {self.root}"
        if not dataset:
            log.warning(
                "no held-back normal images (dataset.val_fraction=0): no thresholds calibrated; mode=predict "
                "will need predict.threshold=, or calibrate on labelled images with calibration.rule=f1max "
                "calibration.root=/path"
            )
            return None
        was_training = pl_module.training
        pl_module.eval()
        try:
            records = score_loader(
                Scorer(pl_module.net, self.protocol), datamodule.loader(dataset), self.rule == "f1max"
            )
        finally:
            pl_module.train(was_training)
        result = calibrate(records, self.rule, self.quantile)
        result = {"rule": self.rule, "calibration_set": source, **result}
        if self.rule == "quantile":
            result["quantile"] = self.quantile
        log.info(
            "thresholds (%s on %s): image %.6g, pixel %.6g (global)",
            self.rule,
            source,
            result["image"]["global"],
            result["pixel"]["global"],
        )
        return result
