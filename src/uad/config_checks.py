"""Values checked before any work, each failing with one line that names the key and the fix. Imports no
torch, so that `run.py` can call it before the heavy imports: a missing dataset root fails in a second."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from uad.errors import ConfigError

MODES = ("train", "describe", "eval", "predict", "export")
DATA_MODES = ("train", "eval")  # the modes that read the dataset
GENERATED_READERS = ("synthetic",)  # made on first use, so a missing root is fine


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception as err:  # an interpolation that does not resolve, a ??? value
        raise ConfigError(f"{key}: {err.__class__.__name__}: {str(err).splitlines()[0]}") from None


def positive_int(cfg: DictConfig, key: str) -> None:
    value = _value(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a whole number of at least 1, e.g. {key}=8")


def finite_float(cfg: DictConfig, key: str) -> None:
    value = _value(cfg, key)
    if value is None:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigError(
            f"{key}={value!r} must be a finite number, e.g. {key}=0.5 (null: the calibrated one)"
        )


def check_training_length(cfg: DictConfig) -> None:
    epochs, steps = _value(cfg, "trainer.max_epochs"), _value(cfg, "trainer.max_steps")
    if epochs == 0 or steps == 0:
        key = "trainer.max_epochs" if epochs == 0 else "trainer.max_steps"
        raise ConfigError(
            f"{key}=0 trains nothing, and the results would be those of an untrained network; give "
            f"{key}=1 or more (mode=eval ckpt_path=... evaluates a trained model)"
        )


def check_input_size(input_size: int, stride: int, backbone: str) -> None:
    """The network input must give the deepest feature map at least 2 x 2 cells."""
    if input_size < 2 * stride:
        raise ConfigError(
            f"protocol.image_size: an input of {input_size} px is too small for backbone={backbone}, whose "
            f"deepest features have stride {stride}; give protocol.image_size={2 * stride} or more"
        )


def check_dataset_root(cfg: DictConfig) -> None:
    """A dataset that is not made on first use must exist before anything is imported or built."""
    dataset = cfg.get("dataset")
    if cfg.get("mode", "train") not in DATA_MODES or not dataset:
        return
    reader = dataset.get("reader")
    if reader in GENERATED_READERS or (cfg.get("mode") == "eval" and not _value(cfg, "dataset.root")):
        return
    from uad.data.readers.registry import READERS, check_root  # the readers' table: no torch

    if reader in READERS:
        check_root(reader, Path(str(_value(cfg, "dataset.root"))).expanduser())


def check_predict_input(cfg: DictConfig) -> None:
    """mode=predict: an input that is not a glob must exist (found before the model is loaded)."""
    spec = _value(cfg, "predict.input")
    if cfg.get("mode") != "predict" or not spec or any(c in str(spec) for c in "*?["):
        return
    if not Path(str(spec)).expanduser().exists():
        raise ConfigError(f"predict.input '{spec}' does not exist; give an image, a folder or a glob")


def check_config(cfg: DictConfig) -> None:
    """Every check that needs only the config; raises `ConfigError` at the first value that cannot work."""
    mode = cfg.get("mode", "train")
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    if mode == "train":
        check_training_length(cfg)
    for key in ("dataset.batch_size", "dataset.eval_batch_size", "predict.batch_size", "protocol.image_size"):
        positive_int(cfg, key)
    for key in ("predict.threshold", "predict.pixel_threshold"):
        finite_float(cfg, key)
    check_dataset_root(cfg)
    check_predict_input(cfg)
