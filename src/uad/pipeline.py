"""Turn a composed Hydra config into a run: `mode=describe` builds and measures the network; `mode=train`
trains and evaluates (one model for all classes, or one per class with `dataset.setting=separate`)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from uad.runstatus import RunStatus
from uad.utils.hydra_job import ddp_children_run_this_job, multirun_job, pin_job_device, uses_script_ddp
from uad.utils.io import write_text
from uad.utils.logging import get_logger, rank_zero_only

if TYPE_CHECKING:
    from uad.metrics.protocol import EvalProtocol

log = get_logger(__name__)
MODES = ("train", "describe", "eval", "predict", "export")


def fit_and_test(
    cfg: DictConfig, protocol: EvalProtocol, output_dir: Path, classes: list[str] | None = None
) -> dict[str, Any] | None:
    """Train one model on the good images of `classes` (all when None), then evaluate it per class."""
    import lightning as L  # here, not at the top: `run.py` starts (and reports a bad config) at torch's cost

    from uad.builders import (
        attach_feature_cache,
        build_datamodule,
        build_encoder,
        build_module,
        build_net,
        build_trainer,
    )
    from uad.callbacks.evaluation import Evaluator
    from uad.callbacks.rng import RngState
    from uad.callbacks.selection import build_selection
    from uad.callbacks.throughput import Throughput
    from uad.provenance import run_info
    from uad.results import write_results
    from uad.thresholds import Calibrator

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg, protocol, classes)
    datamodule.setup("fit")  # data errors (missing root, broken files) come before the model is built
    module = build_module(cfg, build_net(cfg, build_encoder(cfg, protocol)))
    cache = attach_feature_cache(cfg, datamodule, module)
    evaluator = Evaluator(protocol, output_dir, run_info(cfg), print_table=cfg.dataset.setting != "separate")
    throughput, selection = Throughput(), build_selection(cfg, protocol)
    calibrator = Calibrator(protocol, **cfg.get("calibration", {}))  # after a selection restored its best
    callbacks = [evaluator, throughput, RngState(), *([selection] if selection else []), calibrator]
    trainer = build_trainer(cfg, output_dir, callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = evaluator.results
    if results is not None and trainer.is_global_zero:
        results["run"].update(module.net.parameter_counts() | {"throughput": throughput.stats})
        results["extra"]["thresholds"] = module.extra.get("thresholds")
        results["run"]["selection"] = selection.record if selection else {"selected_on_test_set": False}
        results["run"]["feature_cache"] = cache.summary if cache else None
        write_results(output_dir, results)
    return results


def train(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    from uad.builders import build_datamodule, build_protocol
    from uad.results import merge_results, print_table, write_results

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
            from uad.describe import describe

            result = describe(cfg, output_dir)
        elif cfg.mode == "eval":
            from uad.evaluate import evaluate

            result = evaluate(cfg, output_dir)
        elif cfg.mode == "predict":
            from uad.predict import predict

            result = predict(cfg, output_dir)
        elif cfg.mode == "export":
            from uad.export import export

            result = export(cfg, output_dir)
        else:
            if uses_script_ddp(cfg):
                ddp_children_run_this_job(output_dir)
            log.info("%s / %s / %s -> %s", cfg.method.name, cfg.backbone.name, cfg.dataset.name, output_dir)
            result = train(cfg, output_dir)
        if is_rank_zero and cfg.mode in ("train", "eval", "predict"):
            from uad.report import write_report

            write_report(output_dir, cfg.mode)  # report.html from the files just written (uad.report)
    except Exception as err:
        failed = True
        message = status.failed(err) if status else str(err)
        if multirun_job() is None:
            raise
        log.exception("job failed, the sweep goes on: %s (details in %s/error.txt)", message, output_dir)
        return None
    finally:
        if "wandb" in sys.modules:  # only a W&B logger imports it
            from uad.loggers import finish_wandb

            finish_wandb(failed)
    if status:
        status.finished()
    return result
