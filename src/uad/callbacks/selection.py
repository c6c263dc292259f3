"""Selection on the test set, as UniAD and DualAD report their numbers (off by default).

The official `tools/train_val.py` of both evaluate on the test set every `val_freq_epoch` epochs (UniAD 10,
DualAD 20) and keep the checkpoint with the best class-mean `key_metric` (UniAD `mean_pixel_auc`, DualAD
`mean_image_auc`; ties go to the later epoch, `>=`). This callback does the same: it evaluates every
`every_n_epochs` epochs, keeps the trainable weights of the best class-mean `metric`, and restores them
before the final test. The reported numbers are then selected on the test set; `record` says so, and the
pipeline writes it to results.json as `run.selection`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig

from uad.errors import ConfigError
from uad.metrics.functional import ranking_metrics
from uad.metrics.protocol import EvalProtocol
from uad.utils.logging import get_logger

log = get_logger(__name__)
METRICS = ("I-AUROC", "P-AUROC")


class TestSetSelection(Callback):
    """Every `every_n_epochs` epochs: the class mean of `metric` on the test set; the best weights win."""

    def __init__(self, protocol: EvalProtocol, every_n_epochs: int, metric: str = "I-AUROC") -> None:
        if metric not in METRICS:
            raise ConfigError(f"selection.metric '{metric}' is not one of {METRICS}")
        if every_n_epochs < 1:
            raise ConfigError(f"selection.every_n_epochs must be >= 1 (or null: off); got {every_n_epochs}")
        self.protocol, self.every_n_epochs, self.metric = protocol, every_n_epochs, metric
        self.best, self.epoch = -math.inf, None
        self.history: list[dict[str, float]] = []
        self._state: dict[str, torch.Tensor] | None = None

    @property
    def record(self) -> dict[str, Any]:
        """What results.json says about the selection (`run.selection`)."""
        return {
            "every_n_epochs": self.every_n_epochs,
            "metric": f"class mean {self.metric}",
            "selected_on_test_set": True,
            "epoch": self.epoch,
            "value": self.best if self.epoch is not None else None,
            "evaluations": self.history,
        }

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs:
            return
        value = self.evaluate(trainer, pl_module)
        self.history.append({"epoch": epoch, "value": value})
        log.info("selection: epoch %d, class mean %s on the test set %.4f", epoch, self.metric, value)
        if value >= self.best:  # the official `>=`: a tie goes to the later epoch
            self.best, self.epoch = value, epoch
            self._state = {k: v.detach().clone() for k, v in pl_module.net.trainable_state_dict().items()}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._state is not None:
            pl_module.net.load_state_dict(self._state, strict=False)
            log.info("selection: the weights of epoch %d are tested (selected on the test set)", self.epoch)

    @torch.no_grad()
    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> float:
        """The class mean of `metric` over the datamodule's test set, with the protocol's maps and scores."""
        datamodule = trainer.datamodule
        datamodule.setup("test")
        pixel = self.metric.startswith("P-")
        scores, labels = defaultdict(list), defaultdict(list)
        was_training = pl_module.training
        pl_module.eval()
        for batch in datamodule.test_dataloader():
            output = pl_module.net(
                batch["image"].to(pl_module.device), batch["class_id"].to(pl_module.device)
            )
            maps = self.protocol.maps_for_eval(self.protocol.chosen_map(output.maps()))
            if pixel:
                values, truth = maps.cpu().flatten(1), self.protocol.masks_for_eval(batch["mask"]).flatten(1)
            else:
                values, truth = (
                    self.protocol.image_scores(maps, output.image_score).cpu()[:, None],
                    self.protocol.labels(batch["label"], batch["mask"], batch["has_mask"])[:, None],
                )
            for name, v, t in zip(batch["class_name"], values, truth):
                scores[name].append(v)
                labels[name].append(t)
        pl_module.train(was_training)
        per_class = [ranking_metrics(torch.cat(scores[c]), torch.cat(labels[c]))[0] for c in sorted(scores)]
        defined = [v for v in per_class if not math.isnan(v)]
        return sum(defined) / len(defined) if defined else math.nan


def build_selection(cfg: DictConfig, protocol: EvalProtocol) -> TestSetSelection | None:
    """The callback for `cfg.selection` (None when `selection.every_n_epochs` is null: last-epoch results)."""
    selection = cfg.get("selection") or {}
    if selection.get("every_n_epochs") is None:
        return None
    return TestSetSelection(protocol, int(selection.every_n_epochs), selection.get("metric", "I-AUROC"))
