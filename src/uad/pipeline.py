"""Turn a composed Hydra config into a run: `mode=describe` builds and measures the network; `mode=train`
trains and evaluates (one model for all classes, or one per class with `dataset.setting=separate`)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from uad.config_checks import check_config
from uad.errors import UserError, UserKeyError
from uad.runstatus import RunLock, RunStatus
from uad.utils.cli import quiet_libraries
from uad.utils.hydra_job import ddp_children_run_this_job, multirun_job, pin_job_device, uses_script_ddp
from uad.utils.io import write_text
from uad.utils.logging import get_logger, rank_zero_only

if TYPE_CHECKING:
    from uad.callbacks.interrupt import Interruption
    from uad.metrics.protocol import EvalProtocol
    from uad.results import Results

log = get_logger(__name__)


def fit_and_test(
    cfg: DictConfig,
    protocol: EvalProtocol,
    output_dir: Path,
    classes: list[str] | None = None,
    interruption: Interruption | None = None,
) -> Results | None:
    """Train one model on the good images of `classes` (all when None), evaluate it per class, and write
    its results once, with every part of the run added."""
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
    from uad.thresholds import Calibrator

    if cfg.get("ckpt_path"):  # a folder, empty, damaged or unsafe file: one line, before Lightning reads it
        from uad.checkpoint import read_checkpoint

        read_checkpoint(cfg.ckpt_path)
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
    callbacks += [interruption] if interruption else []
    trainer = build_trainer(cfg, output_dir, callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = evaluator.results
    if results is not None and trainer.is_global_zero:
        results.run.update(module.net.parameter_counts() | {"throughput": throughput.stats})
        results.extra["thresholds"] = module.extra.get("thresholds")
        results.run["selection"] = selection.record if selection else {"selected_on_test_set": False}
        results.run["feature_cache"] = cache.summary if cache else None
        results.write(output_dir)
    return results


def train(
    cfg: DictConfig, output_dir: Path, interruption: Interruption | None = None
) -> dict[str, Any] | None:
    """Train and evaluate; the content of the run's results.json (None on ranks other than 0). In the
    separate setting each class's model writes its own (classes/<name>/results.json), and the run's table
    joins them at the end."""
    from uad.builders import build_datamodule, build_protocol
    from uad.results import merge_results, print_table

    protocol = build_protocol(cfg)
    if cfg.dataset.setting != "separate":
        results = fit_and_test(cfg, protocol, output_dir, cfg.dataset.get("classes"), interruption)
        return results.to_json() if results else None
    datamodule = build_datamodule(cfg, protocol)
    datamodule.prepare_data()
    parts = []
    for class_name in datamodule.discover_classes():
        log.info("separate setting: training the model of class '%s'", class_name)
        part = fit_and_test(cfg, protocol, output_dir / "classes" / class_name, [class_name], interruption)
        if part is not None:
            parts.append(part)
    if not parts:
        return None
    results = merge_results(parts)
    results.write(output_dir)
    print_table(results.to_json())
    return results.to_json()


def objective(cfg: DictConfig, results: dict[str, Any] | None) -> float | None:
    """The number a hyperparameter search optimises: the class mean of `optimized_metric` (None when the
    config names none, or the run failed)."""
    metric = cfg.get("optimized_metric")
    if not metric or not results or "mean" not in results:
        return None
    if metric not in results["mean"]:
        raise UserKeyError(f"optimized_metric '{metric}' is not one of {sorted(results['mean'])}")
    return results["mean"][metric]


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """The one entry point behind run.py. The config is checked before any work; the run folder is locked
    against a second run and its `status.json` says how the run ended. In a multirun, a failing job is
    recorded in its folder (`status.json`, `error.txt`) and returns None, so the sweep goes on; a single
    run raises. SIGTERM / SIGINT save a checkpoint and raise `RunInterrupted` (uad.callbacks.interrupt)."""
    check_config(cfg)
    quiet_libraries()
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")  # the frozen encoder, on purpose
    output_dir = Path(cfg.paths.output_dir)
    is_rank_zero = rank_zero_only.rank == 0
    lock = RunLock(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        if is_rank_zero:
            lock.acquire()
        status = RunStatus(output_dir) if is_rank_zero else None
    except OSError as err:
        lock.release()
        raise UserError(
            f"cannot write into the run folder '{output_dir}' ({err.strerror or err}); give a "
            "writable hydra.run.dir="
        ) from err
    from uad.callbacks.interrupt import Interruption, requeued_checkpoint  # Lightning: after the checks

    interruption = Interruption().install()
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
            resume = requeued_checkpoint(output_dir) if not cfg.get("ckpt_path") else None
            if resume is not None:
                log.info("requeued SLURM job: resuming from %s", resume)
                cfg.ckpt_path = str(resume)
            log.info("%s / %s / %s -> %s", cfg.method.name, cfg.backbone.name, cfg.dataset.name, output_dir)
            result = train(cfg, output_dir, interruption)
        if is_rank_zero and cfg.mode in ("train", "eval", "predict"):
            from uad.report import write_report

            write_report(output_dir, cfg.mode)  # report.html from the files just written (uad.report)
    except BaseException as err:
        failed = True
        stop = interruption.as_interrupted(err)
        if stop is not None:
            if status:
                status.interrupted(stop.signal_name, stop.checkpoint)
            raise stop from None
        message = status.failed(err) if status else str(err)
        if multirun_job() is None or not isinstance(err, Exception):
            raise
        log.exception("job failed, the sweep goes on: %s (details in %s/error.txt)", message, output_dir)
        return None
    finally:
        interruption.restore()
        if "wandb" in sys.modules:  # only a W&B logger imports it
            from uad.loggers import finish_wandb

            finish_wandb(failed)
        lock.release()
    if status:
        status.finished()
    return result
