"""Turn a composed Hydra config into a run: `mode=describe` builds and measures the model; `mode=train`
trains and evaluates (one model for all classes, or one per class with `dataset.setting=separate`)."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, read_write

from uad.callbacks.evaluation import Evaluator
from uad.callbacks.rng import RngState
from uad.data.datamodule import AnomalyDataModule
from uad.encoders import Encoder, get_spec
from uad.methods.base import AnomalyModel
from uad.metrics.protocol import EvalProtocol
from uad.nn import attention as _attention  # noqa: F401  registers the CPU SDPA FLOP formula for describe
from uad.results import merge_results, print_table, write_results
from uad.runstatus import RunStatus
from uad.utils.hydra_job import multirun_job
from uad.utils.io import write_json, write_text
from uad.utils.logging import get_logger

log = get_logger(__name__)
MODES = ("train", "describe")


# --- builders: one per config group -------------------------------------------------------------------


def build_protocol(cfg: DictConfig) -> EvalProtocol:
    return EvalProtocol(**OmegaConf.to_container(cfg.protocol, resolve=True))


def build_encoder(cfg: DictConfig, protocol: EvalProtocol) -> Encoder:
    backbone = cfg.backbone
    taps = backbone.get("taps")
    if taps is None:
        method_cls = get_class(cfg.method.model._target_)
        taps = method_cls.default_taps(get_spec(backbone.name))
    return Encoder(
        backbone.name,
        pretrained=backbone.pretrained,
        weights=backbone.get("weights"),
        taps=taps,
        input_size=protocol.input_size,
    )


def build_model(cfg: DictConfig, encoder: Encoder) -> AnomalyModel:
    method = cfg.method
    optimizer = instantiate(method.optimizer) if method.get("optimizer") else None
    scheduler = instantiate(method.scheduler) if method.get("scheduler") else None
    return instantiate(
        method.model,
        encoder=encoder,
        optimizer=optimizer,
        scheduler=scheduler,
        scheduler_interval=method.get("scheduler_interval", "epoch"),
        _convert_="all",
    )


def build_datamodule(
    cfg: DictConfig, protocol: EvalProtocol, classes: list[str] | None = None
) -> AnomalyDataModule:
    overrides: dict[str, Any] = {
        "image_size": protocol.image_size,
        "crop_size": protocol.crop_size,
        **protocol.input_pipeline,
        "mask_threshold": cfg.dataset.get("mask_threshold", protocol.mask_threshold),
    }
    if classes is not None:
        overrides["classes"] = classes
    return instantiate(cfg.dataset, **overrides, _convert_="all")


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
    trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(output_dir),
        callbacks=[*callbacks, *_instantiate_group(cfg.get("callbacks"))],
        logger=_instantiate_group(cfg.get("logger")) or False,
    )
    for logger in trainer.loggers:  # the resolved config goes with the curves (W&B config, hparams.yaml)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return trainer


# --- run records ------------------------------------------------------------------------------------


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("uad", "torch", "lightning", "timm", "hydra-core", "torchmetrics", "albumentations"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def run_info(cfg: DictConfig) -> dict[str, Any]:
    return {
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        "dataset": cfg.dataset.name,
        "setting": cfg.dataset.setting,
        "protocol": cfg.protocol.name,
        "seed": cfg.get("seed"),
        "deterministic": cfg.trainer.get("deterministic"),
        "git_commit": _git_commit(),
        "versions": _package_versions(),
        "machine": platform.node(),
    }


class Throughput(Callback):
    """Wall time and images per second of `fit` and `test`, recorded with the results."""

    def __init__(self) -> None:
        self.stats: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._images: dict[str, int] = {}

    def _begin(self, stage: str) -> None:
        self._start[stage], self._images[stage] = time.perf_counter(), 0

    def _end(self, stage: str) -> None:
        seconds = time.perf_counter() - self._start[stage]
        self.stats[f"{stage}_seconds"] = seconds
        self.stats[f"{stage}_images_per_s"] = self._images[stage] / seconds if seconds > 0 else 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._begin("train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images["train"] += batch["image"].shape[0]

    def on_train_end(self, trainer, pl_module) -> None:
        self._end("train")

    def on_test_start(self, trainer, pl_module) -> None:
        self._begin("test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._images["test"] += batch["image"].shape[0]

    def on_test_end(self, trainer, pl_module) -> None:
        self._end("test")


# --- modes ------------------------------------------------------------------------------------------


def fit_and_test(
    cfg: DictConfig, protocol: EvalProtocol, output_dir: Path, classes: list[str] | None = None
) -> dict[str, Any] | None:
    """Train one model on the good images of `classes` (all when None), then evaluate it per class."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg, protocol, classes)
    model = build_model(cfg, build_encoder(cfg, protocol))
    info = run_info(cfg)
    evaluator = Evaluator(protocol, output_dir, info, print_table=cfg.dataset.setting != "separate")
    throughput = Throughput()
    trainer = build_trainer(cfg, output_dir, [evaluator, throughput, RngState()])
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    trainer.test(model, datamodule=datamodule, verbose=False)
    results = evaluator.results
    if results is not None and trainer.is_global_zero:
        results["run"].update(model.parameter_counts() | {"throughput": throughput.stats})
        write_results(output_dir, results)
    return results


def train(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    protocol = build_protocol(cfg)
    if cfg.dataset.setting != "separate":
        return fit_and_test(cfg, protocol, output_dir, cfg.dataset.get("classes"))
    datamodule = build_datamodule(cfg, protocol)
    datamodule.prepare_data()
    parts = []
    for class_name in datamodule.discover_classes():
        log.info("separate setting: training the model of class '%s'", class_name)
        part = fit_and_test(cfg, protocol, output_dir / "classes" / class_name, [class_name])
        if part is not None:
            parts.append(part)
            results = merge_results(parts)
            write_results(output_dir, results)  # the table so far survives a crash in a later class
    if not parts:
        return None
    print_table(results)
    return results


@torch.no_grad()
def describe(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Build the configured model without training; report parameters, shapes and FLOPs per image."""
    from torch.utils.flop_counter import FlopCounterMode

    protocol = build_protocol(cfg)
    encoder = build_encoder(cfg, protocol)
    model = build_model(cfg, encoder).eval()
    images = torch.randn(1, 3, protocol.input_size, protocol.input_size)
    with FlopCounterMode(display=False) as counter:
        encoder(images)
    encoder_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        outputs = model(images)
    total_flops = counter.get_total_flops()
    info = {
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        "input_size": protocol.input_size,
        **model.parameter_counts(),
        "encoder": {
            "timm_model": encoder.spec.timm_name,
            "taps": list(encoder.taps),
            "channels": encoder.channels,
            "strides": encoder.strides,
            "weights": encoder.weights_source,
        },
        "shapes": {name: _shapes(value) for name, value in outputs.items()},
        "gflops": total_flops / 1e9,
        "gmacs": total_flops / 2e9,
        "gmacs_encoder": encoder_flops / 2e9,
        "gmacs_trainable": (total_flops - encoder_flops) / 2e9,
    }
    write_json(output_dir / "describe.json", info)
    _print_description(info)
    return info


def _shapes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, list | tuple):
        return [_shapes(v) for v in value]
    if isinstance(value, dict):
        return {k: _shapes(v) for k, v in value.items()}
    return None


def _print_description(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{info['method']} on {info['backbone']} at {info['input_size']} px")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("trainable params", f"{info['trainable_params']:,}")
    table.add_row("frozen params", f"{info['frozen_params']:,}")
    for name, count in info["per_module"].items():
        table.add_row(f"  {name}", f"{count:,}")
    table.add_row(
        "GMACs / image (encoder + rest)",
        f"{info['gmacs']:.2f} ({info['gmacs_encoder']:.2f} + {info['gmacs_trainable']:.2f})",
    )
    for name, shape in info["shapes"].items():
        table.add_row(f"shape: {name}", str(shape))
    Console().print(table)


# --- Hydra multiruns, launchers and DDP ------------------------------------------------------------


def pin_job_device(cfg: DictConfig) -> None:
    """One GPU per job in a sweep: job i runs on GPU i mod N (parallel launchers such as joblib do not
    assign devices). Only when the job asks for one device and this process sees several."""
    job = multirun_job()
    if job is None or cfg.trainer.get("accelerator") not in ("gpu", "cuda", "auto"):
        return
    count = torch.cuda.device_count()
    if count > 1 and str(cfg.trainer.get("devices")) == "1":
        cfg.trainer.devices = [job.job.num % count]
        log.info("job %d runs on GPU %d of %d", job.job.num, job.job.num % count, count)


_CONFIG_FLAGS = ("--config-path", "--config-name", "--config-dir", "-cp", "-cn", "-cd")


def ddp_children_run_this_job(output_dir: Path) -> None:
    """Lightning's `ddp` starts ranks > 0 by re-running `sys.argv` plus `hydra.run.dir=<run dir>`; inside a
    multirun that would start the whole sweep again in every child, in the wrong folder. Make the children
    run this one job (its own overrides, no `-m`) in this job's folder."""
    job = multirun_job()
    if job is None:
        return
    flags, argv = [], sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg.startswith(_CONFIG_FLAGS):
            flags.append(arg)
            if "=" not in arg and i + 1 < len(argv):
                flags.append(argv[i + 1])
    sys.argv = [sys.argv[0], *flags, *job.overrides.task]
    with read_write(job.run):
        job.run.dir = str(output_dir)


def _uses_script_ddp(cfg: DictConfig) -> bool:
    strategy = str(cfg.trainer.get("strategy", ""))
    return strategy.startswith("ddp") and "spawn" not in strategy and "notebook" not in strategy


def _finish_wandb(failed: bool) -> None:
    """Sequential multirun jobs share the process: close this job's W&B run before the next starts."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def objective(cfg: DictConfig, results: dict[str, Any] | None) -> float | None:
    """The number a hyperparameter search optimises: the class mean of `optimized_metric` (None when the
    config names none, or the run failed)."""
    metric = cfg.get("optimized_metric")
    if not metric or not results or "mean" not in results:
        return None
    if metric not in results["mean"]:
        raise KeyError(f"optimized_metric '{metric}' is not one of {sorted(results['mean'])}")
    return results["mean"][metric]


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """The one entry point behind run.py. In a multirun, a failing job is recorded in its folder
    (`status.json`, `error.txt`) and returns None, so the sweep goes on; a single run raises."""
    if cfg.mode not in MODES:
        raise ValueError(f"mode '{cfg.mode}' is not one of {MODES}")
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")  # the frozen encoder, on purpose
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    is_rank_zero = rank_zero_only.rank == 0
    status = RunStatus(output_dir) if is_rank_zero else None
    failed = False
    try:
        pin_job_device(cfg)
        if is_rank_zero:
            write_text(output_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        if cfg.mode == "describe":
            result = describe(cfg, output_dir)
        else:
            if _uses_script_ddp(cfg):
                ddp_children_run_this_job(output_dir)
            log.info("%s / %s / %s -> %s", cfg.method.name, cfg.backbone.name, cfg.dataset.name, output_dir)
            result = train(cfg, output_dir)
    except Exception as err:
        failed = True
        message = status.failed(err) if status else str(err)
        if multirun_job() is None:
            raise
        log.exception("job failed, the sweep goes on: %s (details in %s/error.txt)", message, output_dir)
        return None
    finally:
        _finish_wandb(failed)
    if status:
        status.finished()
    return result
