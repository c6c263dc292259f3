"""Builders: one per config group, each turning its part of the composed config into an object."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch import Callback, Trainer
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from uad.config_checks import check_input_size
from uad.data.datamodule import AnomalyDataModule
from uad.data.feature_cache import FeatureCache
from uad.encoders import Encoder, get_spec
from uad.errors import UserError
from uad.methods.base import AnomalyNet
from uad.metrics.protocol import EvalProtocol
from uad.module import AnomalyModule
from uad.utils.distributed import FrozenSafeDDPStrategy
from uad.utils.logging import get_logger

log = get_logger(__name__)

CHECKPOINT_GROUPS = ("method", "backbone", "protocol", "dataset")  # what rebuilds a network and its inputs


def build_protocol(cfg: DictConfig) -> EvalProtocol:
    return EvalProtocol.from_config(OmegaConf.to_container(cfg.protocol, resolve=True))


def build_encoder(
    cfg: DictConfig, protocol: EvalProtocol, weights: Mapping[str, Tensor] | None = None
) -> Encoder:
    """The frozen encoder; `weights` (a state dict already in memory, e.g. from an official checkpoint)
    replaces `backbone.weights`. `backbone.channels_last` (a CNN's; default true): the encoder convolves
    NHWC (`Encoder`)."""
    backbone = cfg.backbone
    taps = backbone.get("taps")
    if taps is None:
        taps = get_class(cfg.method.model._target_).default_taps(get_spec(backbone.name))
    encoder = Encoder(
        backbone.name,
        pretrained=backbone.pretrained,
        weights=weights if weights is not None else backbone.get("weights"),
        taps=taps,
        input_size=protocol.input_size,
        channels_last=backbone.get("channels_last", True),
    )
    check_input_size(protocol.input_size, max(encoder.strides), backbone.name)
    return encoder


def build_net(cfg: DictConfig, encoder: Encoder) -> AnomalyNet:
    """The method's network (`method.model`) around `encoder`. `method.compile=true` compiles `extract` and
    `reconstruct` with `torch.compile` (instance attributes: the state dict keeps its names)."""
    try:
        net = instantiate(cfg.method.model, encoder=encoder, _convert_="all")
    except InstantiationException as error:  # a network's own UserError reaches the user unwrapped
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise
    if cfg.method.get("compile", False):
        net.extract = torch.compile(net.extract)
        net.reconstruct = torch.compile(net.reconstruct)
    return net


def build_module(cfg: DictConfig, net: AnomalyNet, train: bool = True) -> AnomalyModule:
    """The LightningModule that trains `net` with the method's optimiser and schedule (train=false, for a
    loaded model: neither is built); it keeps the resolved config so that its checkpoints can rebuild the
    network alone."""
    method = cfg.method
    return AnomalyModule(
        net,
        optimizer=instantiate(method.optimizer) if train and method.get("optimizer") else None,
        scheduler=instantiate(method.scheduler) if train and method.get("scheduler") else None,
        scheduler_interval=method.get("scheduler_interval", "epoch"),
        no_decay_1d=method.get("no_decay_1d", False),
        config={group: OmegaConf.to_container(cfg[group], resolve=True) for group in CHECKPOINT_GROUPS},
    )


def build_datamodule(
    cfg: DictConfig, protocol: EvalProtocol, classes: list[str] | None = None
) -> AnomalyDataModule:
    """The data module of `cfg.dataset`, reading its input through `protocol` (the same as
    `dataset.protocol`, which points at the run's protocol for a data module built from the config alone)."""
    overrides: dict[str, Any] = {"protocol": protocol.as_dict()}
    if classes is not None:
        overrides["classes"] = classes
    return instantiate(cfg.dataset, **overrides, _convert_="all")


def attach_feature_cache(
    cfg: DictConfig, datamodule: AnomalyDataModule, module: AnomalyModule
) -> FeatureCache | None:
    """The `feature_cache` group (memory | disk | none), shared by the training loader and the module. An
    augmentation in `dataset.augment` switches it off (the images, hence the features, change every epoch)."""
    options = OmegaConf.to_container(cfg.get("feature_cache") or {}, resolve=True)
    mode = options.pop("mode", None)
    if not mode:
        return None
    if cfg.dataset.get("augment"):
        log.info("feature cache off: dataset.augment changes the training images every epoch")
        return None
    cache = FeatureCache(mode, **options)
    datamodule.feature_cache = module.feature_cache = cache
    return cache


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Every entry of a config group that has a `_target_` (callbacks, loggers)."""
    if not group:
        return []
    return [
        instantiate(entry)
        for entry in group.values()
        if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def build_trainer(cfg: DictConfig, output_dir: Path, callbacks: list[Callback]) -> Trainer:
    """The Lightning Trainer of `cfg.trainer`; `strategy: ddp` runs as `FrozenSafeDDPStrategy`, so that a
    memory-bank method (no trainable parameter) runs distributed too."""
    strategy = {"strategy": FrozenSafeDDPStrategy()} if cfg.trainer.get("strategy") == "ddp" else {}
    trainer = instantiate(
        cfg.trainer,
        **strategy,
        default_root_dir=str(output_dir),
        callbacks=[*callbacks, *_instantiate_group(cfg.get("callbacks"))],
        logger=_instantiate_group(cfg.get("logger")) or False,
    )
    for logger in trainer.loggers:  # the resolved config goes with the curves (W&B config, hparams.yaml)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return trainer
