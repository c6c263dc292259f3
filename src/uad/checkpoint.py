"""Reading our checkpoints back: a `last.ckpt` holds the trainable state and the config groups that rebuild
its network (`checkpoint["uad"]`, written by `AnomalyModule`), so a checkpoint alone is a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from uad.builders import CHECKPOINT_GROUPS, build_encoder, build_module, build_net, build_protocol
from uad.errors import UserError
from uad.module import CHECKPOINT_KEY, AnomalyModule
from uad.utils.logging import get_logger

log = get_logger(__name__)


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or not one of ours."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at `path`, or one clear error naming the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint '{path}' does not exist; give ckpt_path=<run folder>/checkpoints/last.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint '{path}' ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"'{path}' holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def checkpoint_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The config groups a uad checkpoint was trained with."""
    own = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(own, dict) or not own.get("config"):
        raise CheckpointError(
            f"'{path}' is not a uad checkpoint (no '{CHECKPOINT_KEY}' entry with the run's config); give the "
            f"last.ckpt of a uad run, or an official checkpoint to mode=eval with method= and backbone="
        )
    return own["config"]


def merge_checkpoint_config(cfg: DictConfig, saved: dict[str, Any], path: str | Path) -> DictConfig:
    """`cfg` with the checkpoint's own method, backbone, protocol and dataset groups: what the network was
    trained with wins over the command line, and each group that differed is named in one log line."""
    cfg = cfg.copy()
    with open_dict(cfg):
        for group in CHECKPOINT_GROUPS:
            if group not in saved:
                continue
            given = OmegaConf.to_container(cfg[group], resolve=True) if group in cfg else None
            if group != "dataset" and given is not None and given != saved[group]:
                log.warning("checkpoint '%s': its %s config wins over the command line's", path, group)
            if group != "dataset":  # the data to run on is the command line's to choose
                cfg[group] = OmegaConf.create(saved[group])
    return cfg


def load_module(path: str | Path, cfg: DictConfig | None = None) -> tuple[AnomalyModule, DictConfig]:
    """Rebuild the network of a uad checkpoint (encoder from its weights source, trainable state from the
    file) in eval mode; returns it with the config it was built from."""
    checkpoint = read_checkpoint(path)
    saved = checkpoint_config(checkpoint, path)
    cfg = merge_checkpoint_config(cfg if cfg is not None else OmegaConf.create(saved), saved, path)
    module = build_module(cfg, build_net(cfg, build_encoder(cfg, build_protocol(cfg))))
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    return module.eval(), cfg
