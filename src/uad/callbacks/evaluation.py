"""The Evaluator callback: collects per-image maps and scores during `trainer.test` in the torchmetrics
states of `ImageMetrics` / `PixelMetrics` (CPU, compact), gathers them from every rank, drops the samples
the distributed sampler repeated, and computes each class's metrics once, on rank 0. Where the data has
multi-view sample keys (Real-IAD), the sample-level S-AUROC, S-AP and S-F1max go to results["extra"].
A protocol may add a paper's own reporting rules: its approximate AUPRO as one more metric ("AUPRO@200",
protocol.aupro_thresholds) and UniAD's flip of an AUROC below 0.5 (protocol.flip_auroc), every flipped
number listed with its raw value in results["extra"]["flipped_auroc"].

A class whose evaluation fails is named in `errors` with its cause; the others are kept. The Evaluator
writes `predictions.csv` and the overlays; its `results` (a `uad.results.Results`) are written once, by
the run, after its other parts have added theirs.
"""

from __future__ import annotations

import csv
import io
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics.utilities import dim_zero_cat

from uad.callbacks.visualize import save_overlays
from uad.data.batch import Batch
from uad.metrics.functional import (
    SAMPLE_METRICS,
    compute_metrics,
    flip_auroc,
    ranking_metrics,
    sample_metrics,
)
from uad.metrics.protocol import EvalProtocol
from uad.metrics.records import EvalRecords
from uad.metrics.stateful import ImageMetrics, PixelMetrics
from uad.report.evidence import record_evaluation
from uad.results import Results, class_mean, print_table
from uad.utils.io import write_text
from uad.utils.logging import get_logger

log = get_logger(__name__)


class Evaluator(Callback):
    """Turns the test step's anomaly maps into per-class metrics (`results`), predictions.csv, overlays and
    logger entries."""

    def __init__(
        self,
        protocol: EvalProtocol,
        output_dir: str | Path | None = None,
        run_info: dict[str, Any] | None = None,
        overlays_per_class: int = 3,
        print_table: bool = True,
    ) -> None:
        self.protocol = protocol
        self.output_dir = Path(output_dir) if output_dir else None
        self.run_info = dict(run_info or {})
        self.overlays_per_class = overlays_per_class
        self.print_table = print_table
        self.results: Results | None = None
        self._reset()

    def _reset(self) -> None:
        p = self.protocol
        self.image_metrics = ImageMetrics()
        self.pixel_metrics = PixelMetrics(p.fpr_limit, p.pixel_bins, p.map_torch_dtype)
        self._meta: dict[int, tuple[str, str, str, str]] = {}  # index -> class, defect, path, sample key
        self._overlays: dict[str, list[dict[str, Any]]] = {}

    # -- collection -------------------------------------------------------------------------------

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()
        self.results = None

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        maps = self.protocol.maps_for_eval(self.protocol.chosen_map(outputs["maps"]))  # (B, h, w) float32
        scores = self.protocol.image_scores(maps, outputs.get("image_score"))  # (B,)
        masks = self.protocol.masks_for_eval(batch["mask"])  # (B, h, w) bool
        labels = self.protocol.labels(batch["label"], batch["mask"], batch["has_mask"])  # (B,)
        index = batch["index"].cpu()
        self.image_metrics.update(scores, labels, index)
        self.pixel_metrics.update(maps, masks, index)
        for i, *meta in zip(
            index.tolist(), batch["class_name"], batch["defect"], batch["path"], batch["sample_key"]
        ):
            self._meta[i] = tuple(meta)
        self._keep_overlays(batch, maps, masks, labels)

    def _keep_overlays(
        self, batch: Batch, maps: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Keep a few images per class for the overlay PNGs: defective ones first, one good one."""
        if self.overlays_per_class <= 0:
            return
        for i, name in enumerate(batch["class_name"]):
            kept = self._overlays.setdefault(name, [])
            label = int(labels[i])
            quota = 1 if label == 0 else self.overlays_per_class - 1
            if sum(k["label"] == label for k in kept) >= quota:
                continue
            kept.append(
                {
                    "image": batch["image"][i].detach().float().cpu(),
                    "map": maps[i].cpu(),
                    "mask": masks[i].cpu(),
                    "label": label,
                    "defect": batch["defect"][i],
                    "path": batch["path"][i],
                }
            )

    def _gathered(self, trainer: Trainer) -> EvalRecords | None:
        """All ranks' records (every rank must call this), one per dataset index, sorted by index."""
        meta = self._meta
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(parts, meta)
            meta = {k: v for part in parts for k, v in part.items()}
            self.image_metrics.sync()
            self.pixel_metrics.sync()
        if not meta:
            return None
        image, pixel = self.image_metrics.records(), self.pixel_metrics.records()
        dropped = dim_zero_cat(self.image_metrics.index).numel() - len(image["index"])
        if dropped:
            log.info("evaluation: dropped %d samples repeated by the distributed sampler", dropped)
        class_name, defect, path, sample_key = zip(*(meta[i] for i in image["index"].tolist()))
        return EvalRecords(
            image["index"],
            image["score"],
            image["label"],
            pixel["map"],
            pixel["mask"],
            list(class_name),
            list(defect),
            list(path),
            list(sample_key),
        )

    # -- computation ------------------------------------------------------------------------------

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        records = self._gathered(trainer)
        if trainer.is_global_zero and records is not None:
            self.results = self.evaluate(records, trainer)
            if self.output_dir:  # what report.html shows beyond results.json (uad.report)
                record_evaluation(self.output_dir, records, self.protocol.fpr_limit, trainer)
            if self.print_table:
                print_table(self.results.to_json())
        self._reset()

    def evaluate(self, records: EvalRecords, trainer: Trainer | None = None) -> Results:
        classes = list(dict.fromkeys(records.class_name))
        per_class: dict[str, dict[str, float]] = {}
        per_defect: dict[str, dict[str, Any]] = {}
        counts: dict[str, dict[str, int]] = {}
        errors: dict[str, str] = {}
        samples: dict[str, dict[str, float]] = {}
        flipped: list[dict[str, Any]] = []
        if self.output_dir:
            write_text(self.output_dir / "predictions.csv", _predictions_csv(records))
        for name in classes:
            sel = records.of_class(name)
            labels = records.label[sel]
            counts[name] = {"good": int((labels == 0).sum()), "defective": int((labels == 1).sum())}
            try:
                per_class[name] = self._class_metrics(name, records, sel, flipped)
                per_defect[name] = _per_defect(records, sel)
                keys = [k for k, s in zip(records.sample_key, sel.tolist()) if s]
                if all(keys):  # multi-view data: a sample's score is the max over its views
                    samples[name] = sample_metrics(records.score[sel], labels, keys)
            except Exception as err:  # one failing class must not lose the others
                errors[name] = f"{type(err).__name__}: {err}"
                log.error("evaluation of class '%s' failed:\n%s", name, traceback.format_exc())
        extra = _sample_extra(samples) if samples else {}
        if self.protocol.flip_auroc:
            extra["flipped_auroc"] = flipped
        results = Results(
            per_class, self.protocol.as_dict(), dict(self.run_info), per_defect, counts, errors, extra
        )
        if self.output_dir and self._overlays:
            save_overlays(self.output_dir / "overlays", self._overlays, records)
        if trainer is not None:
            _log_to_loggers(trainer, results.to_json())
        return results

    def _class_metrics(
        self, name: str, records: EvalRecords, sel: torch.Tensor, flipped: list[dict[str, Any]]
    ) -> dict[str, float]:
        """One class's metrics under the protocol; a flipped AUROC (protocol.flip_auroc) is appended to
        `flipped` with its class, its raw value and the value reported."""
        p = self.protocol
        metrics = compute_metrics(
            records.score[sel],
            records.label[sel],
            records.map[sel],
            records.mask[sel],
            fpr_limit=p.fpr_limit,
            bins=p.pixel_bins,
            aupro_thresholds=p.aupro_thresholds,
            aupro_fpr_rescale=p.aupro_fpr_rescale,
        )
        if not p.flip_auroc:
            return metrics
        reported, names = flip_auroc(metrics)
        for metric in names:
            log.warning(
                "evaluation: %s of class '%s' is %.4f; reported flipped", metric, name, metrics[metric]
            )
            flipped.append(
                {"class": name, "metric": metric, "raw": metrics[metric], "reported": reported[metric]}
            )
        return reported


def _sample_extra(samples: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Sample-level metrics per class and their unweighted mean (classes where one is NaN skipped)."""
    return {"sample_level": {"per_class": samples, "mean": class_mean(samples, SAMPLE_METRICS)}}


def _per_defect(records: EvalRecords, sel: torch.Tensor) -> dict[str, Any]:
    """Image AUROC of each defect type against the class's good images."""
    defects = [d for d, s in zip(records.defect, sel.tolist()) if s]
    labels, scores = records.label[sel], records.score[sel]
    out: dict[str, Any] = {}
    for defect in sorted({d for d, y in zip(defects, labels.tolist()) if y == 1}):
        pick = torch.tensor([d == defect or y == 0 for d, y in zip(defects, labels.tolist())])
        n = sum(d == defect for d in defects)
        out[defect] = {
            "I-AUROC": ranking_metrics(scores[pick], labels[pick], f"defect '{defect}'")[0],
            "count": n,
        }
    return out


def _predictions_csv(records: EvalRecords) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["index", "class", "defect", "label", "score", "path", "sample_key"])
    for i in range(len(records)):
        writer.writerow(
            [
                int(records.index[i]),
                records.class_name[i],
                records.defect[i],
                int(records.label[i]),
                repr(float(records.score[i])),
                records.path[i],
                records.sample_key[i],
            ]
        )
    return buffer.getvalue()


def _log_to_loggers(trainer: Trainer, results: dict[str, Any]) -> None:
    flat = {}
    for name, metrics in [*results["per_class"].items(), ("mean", results["mean"])]:
        flat.update({f"test/{name}/{k}": v for k, v in metrics.items() if v is not None})
    sample_mean = results["extra"].get("sample_level", {}).get("mean", {})
    flat.update({f"test/mean/{k}": v for k, v in sample_mean.items() if v is not None})
    for logger in trainer.loggers:
        logger.log_metrics(flat, step=trainer.global_step)
        log_results = getattr(logger, "log_results_table", None)
        if callable(log_results):
            log_results(results)
