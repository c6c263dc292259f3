"""One LightningModule for every method: it wraps an `AnomalyNet` and adds what training needs (steps,
optimiser and schedule from the config, checkpoint contents), so a method file holds only its network."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.optim import Optimizer

from uad.data.batch import Batch
from uad.data.batch import batch_size as images_in
from uad.data.feature_cache import FeatureCache
from uad.errors import ConfigError, UserKeyError
from uad.methods.base import AnomalyNet, MemoryBankNet, NetOutput
from uad.optim.param_groups import no_decay_1d_groups
from uad.utils.logging import get_logger

log = get_logger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], Any]
CHECKPOINT_KEY = "uad"  # our own entry in a Lightning checkpoint: format, the run's config, thresholds
CHECKPOINT_FORMAT = "uad-checkpoint/1"
FUSABLE = (torch.optim.Adam, torch.optim.AdamW)  # have a fused kernel on CPU and GPU


def issubclass_of(obj: Any, classes: tuple[type, ...]) -> bool:
    """`obj` is one of `classes` or a subclass (an AdamW with its own parameter groups fuses too)."""
    return isinstance(obj, type) and issubclass(obj, classes)


class AnomalyModule(LightningModule):
    """Trains and tests any `AnomalyNet`.

    Checkpoints carry only the trainable state (`net.*` minus the frozen encoder, which is rebuilt from its
    weights source) plus `checkpoint["uad"]`: the format tag, the run's resolved config (so a checkpoint
    alone can rebuild its network) and whatever `extra` holds (e.g. calibrated thresholds).

    A `MemoryBankNet` is fitted instead of trained: each training step only keeps the batch's features,
    class ids and dataset indices (gathered from every rank under DDP); at the end of the first epoch
    (Lightning's `on_train_epoch_end` hook) `net.fit` builds the bank from them, in dataset order, so every
    rank holds the same bank, and the trainer stops (`trainer.max_epochs` does not matter). No optimiser is
    configured or stepped.
    """

    def __init__(
        self,
        net: AnomalyNet,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        config: dict[str, Any] | None = None,
        no_decay_1d: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.no_decay_1d = no_decay_1d  # biases and 1-D tensors without weight decay (ADer's recipes)
        self.config = config
        self.extra: dict[str, Any] = {}
        self.strict_loading = False  # checkpoints carry only the trainable state
        self.fits_memory = isinstance(net, MemoryBankNet)
        self.automatic_optimization = not self.fits_memory
        self.training_features: list[dict[str, Tensor]] = []  # a memory-bank net's, until its fit
        self.feature_cache: FeatureCache | None = None  # set by uad.builders.attach_feature_cache

    @property
    def attached(self) -> bool:
        """Whether a Trainer runs this module (not so in a benchmark or a unit test)."""
        try:
            return self.trainer is not None
        except RuntimeError:  # Lightning's answer for a module no Trainer holds
            return False

    def forward(self, images: Tensor, class_id: Tensor | None = None):
        return self.net(images, class_id)

    def train_output(self, batch: Batch) -> NetOutput:
        """The network's training output; with a feature cache the frozen part is read from it once full
        (the batch then holds indices only) and filled from the images before."""
        if self.feature_cache is None:
            return self.net(batch["image"], batch.get("class_id"))
        features = self.feature_cache.features(batch, self.net.extract)
        return self.net.reconstruct(features, self.feature_cache.image_size)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        if self.fits_memory:
            self.keep_training_features(batch)
            return None
        losses = self.net.loss(self.train_output(batch), self.global_step)
        losses = losses if isinstance(losses, dict) else {"loss": losses}
        batch_size = images_in(batch)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train/{name}", value, batch_size=batch_size)
        return losses["loss"]

    def on_train_start(self) -> None:
        if self.feature_cache is not None and self.trainer.world_size > 1:
            # each rank sees other images every epoch: its share would never fill; the loader keeps decoding
            log.info("feature cache off: it is per process, the run has %d ranks", self.trainer.world_size)
            self.feature_cache = None

    def on_train_end(self) -> None:
        if self.feature_cache is not None:  # free the memory (or disk) before testing
            self.feature_cache.close()

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """The network's maps by name (`NetOutput.maps()`: its own anomaly map at input resolution first) and
        its own image scores (None when it has none); the Evaluator callback turns them into metrics."""
        output = self.net(batch["image"], batch.get("class_id"))
        return {"maps": output.maps(), "image_score": output.image_score}

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        return self.test_step(batch, batch_idx)

    @torch.no_grad()
    def keep_training_features(self, batch: Batch) -> None:
        """A memory-bank net's training step: keep the batch's features, class ids and dataset indices on the
        CPU; under DDP every rank's, so that each rank fits the same bank."""
        part = {**self.net.extract(batch["image"]), "class_id": batch["class_id"], "index": batch["index"]}
        if self.attached and self.trainer.world_size > 1:  # (ranks, B, ...) -> (ranks * B, ...)
            part = {key: value.flatten(0, 1) for key, value in self.all_gather(part).items()}
        self.training_features.append({key: value.cpu() for key, value in part.items()})

    def fit_memory(self) -> None:
        """Fit the memory-bank net on the kept features: each image once (the distributed sampler repeats a
        few to even out the ranks) and in dataset order, so the bank depends on neither the shuffle nor the
        number of ranks."""
        if not self.training_features:
            raise RuntimeError(f"{type(self.net).__name__}: no training features to fit its memory bank on")
        kept = {
            key: torch.cat([part[key] for part in self.training_features])
            for key in self.training_features[0]
        }
        self.training_features = []
        index, order = kept.pop("index").sort(stable=True)
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        rows = order[first]
        class_id = kept.pop("class_id")[rows]
        self.net.fit({key: value[rows] for key, value in kept.items()}, class_id)

    def on_train_epoch_end(self) -> None:
        if not self.fits_memory:
            return
        self.fit_memory()
        self.trainer.should_stop = True
        self.save_fitted_checkpoints()

    def save_fitted_checkpoints(self) -> None:
        """Lightning's `ModelCheckpoint` saves only after a new optimiser step, and a fit takes none: write
        each checkpoint callback's file here (every rank calls this, rank 0 writes) and record it as the
        callback's last checkpoint, the file calibration re-saves with its thresholds."""
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                path = callback.format_checkpoint_name(
                    {"epoch": self.current_epoch, "step": self.global_step}
                )
                self.trainer.save_checkpoint(path)
                callback.last_model_path = path

    def configure_optimizers(self):
        if self.fits_memory:
            return None
        if self.optimizer_factory is None:
            raise ConfigError("no optimizer configured: set method.optimizer in the config")
        params = no_decay_1d_groups(self.net) if self.no_decay_1d else self.net.trainable_parameters()
        optimizer = self.optimizer_factory(params, **self.optimizer_options())
        factory = self.scheduler_factory
        if factory is None:
            return optimizer
        if isinstance(factory, partial) and (factory.keywords.get("total_steps") or 0) < 0:
            # an epoch-based run (trainer.max_steps = -1): the schedule spans the run, known to the trainer
            if not self.attached:  # outside a Trainer (a benchmark) nothing would step a scheduler
                return optimizer
            factory = partial(factory, total_steps=int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": factory(optimizer), "interval": self.scheduler_interval},
        }

    def optimizer_options(self) -> dict[str, Any]:
        """`fused=True` for torch's Adam and AdamW: one pass over parameters, gradients and moments instead of
        one per operation (DualAD-He's 30.7 M parameters: 2.6-3.9x less CPU time per step on 2 cores, see
        docs/speed.md); the same update up to float rounding. Not when the config chose an implementation
        (`fused` or `foreach`), nor under mixed precision, where Lightning refuses to clip the gradients of a
        fused optimiser."""
        factory = self.optimizer_factory
        if not isinstance(factory, partial) or not issubclass_of(factory.func, FUSABLE):
            return {}
        if {"fused", "foreach"} & factory.keywords.keys():
            return {}
        if self.attached and "mixed" in str(self.trainer.precision):
            return {}
        return {"fused": True}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("net.encoder.")
        }
        checkpoint[CHECKPOINT_KEY] = {"format": CHECKPOINT_FORMAT, "config": self.config, **self.extra}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        if state and not any(k.startswith("net.") for k in state):  # written before the network split
            checkpoint["state_dict"] = state = {f"net.{k}": v for k, v in state.items()}
        own = {f"net.{k}" for k in self.net.trainable_state_dict()}
        missing = sorted(own - set(state))
        if missing:
            raise UserKeyError(
                f"checkpoint lacks trainable tensors of this model, e.g. {missing[:5]}: it was trained with "
                "another method or backbone; give the method= and backbone= it was trained with"
            )
        self.extra = {
            k: v for k, v in checkpoint.get(CHECKPOINT_KEY, {}).items() if k not in ("format", "config")
        }
