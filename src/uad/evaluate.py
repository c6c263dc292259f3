"""`mode=eval`: evaluate a saved model without training, into the same files as a training run.

`ckpt_path=` names either a uad `last.ckpt` (its own method, backbone and protocol win, see
`uad.checkpoint`) or a checkpoint saved by the official code (Dinomaly's `model.pth`, UniAD's or DualAD's
`train_val.py` checkpoint; `uad.official`), for which `method=`, `backbone=` and `protocol=` on the command
line say what it is. The test set goes through the same `Evaluator` as after training.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from uad.builders import build_datamodule, build_protocol, build_trainer
from uad.callbacks.evaluation import Evaluator
from uad.callbacks.throughput import Throughput
from uad.checkpoint import CheckpointError, load_module, read_checkpoint
from uad.module import CHECKPOINT_KEY, AnomalyModule
from uad.official import layout_of, load_official
from uad.provenance import run_info
from uad.utils.logging import get_logger

log = get_logger(__name__)


def load_any(path: str | Path, cfg: DictConfig) -> tuple[AnomalyModule, DictConfig, str]:
    """(module in eval mode, the config it runs with, "uad" or the official layout) for `path`, read once
    and safely (`uad.checkpoint.read_checkpoint`): a uad checkpoint by its own entry, an official one by
    its keys."""
    checkpoint = read_checkpoint(path)
    if CHECKPOINT_KEY in checkpoint:
        module, cfg = load_module(path, cfg, checkpoint)
        return module, cfg, "uad"
    layout, _ = layout_of(checkpoint, path)
    module, cfg = load_official(path, cfg, checkpoint)
    return module, cfg, layout


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    """Load `cfg.ckpt_path`, run the test set through the Evaluator, write results.json and its siblings."""
    path = cfg.get("ckpt_path")
    if not path:
        raise CheckpointError("mode=eval needs ckpt_path=<a uad last.ckpt or an official checkpoint>")
    start = time.perf_counter()
    module, cfg, source = load_any(path, cfg)
    protocol = build_protocol(cfg)
    datamodule = build_datamodule(cfg, protocol, cfg.dataset.get("classes"))
    evaluator = Evaluator(protocol, output_dir, run_info(cfg))
    throughput = Throughput()
    trainer = build_trainer(cfg, output_dir, [evaluator, throughput])
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = evaluator.results
    if results is None or not trainer.is_global_zero:
        return None
    results.run.update(module.net.parameter_counts() | {"throughput": throughput.stats})
    results.run["evaluated_checkpoint"] = {
        "path": str(path),
        "layout": source,
        "seconds": round(time.perf_counter() - start, 2),
    }
    results.write(output_dir)
    return results.to_json()
