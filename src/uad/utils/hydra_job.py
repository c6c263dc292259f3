"""The Hydra job a run belongs to, and what a job inside a multirun does differently: failure capture
(`multirun_job`), one GPU per job, and DDP children that re-run only their own job."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, read_write

from uad.utils.logging import get_logger

log = get_logger(__name__)
_CONFIG_FLAGS = ("--config-path", "--config-name", "--config-dir", "-cp", "-cn", "-cd")


def multirun_job() -> Any | None:
    """The Hydra config of the current job when it is part of a multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return HydraConfig.get()
    return None


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


def uses_script_ddp(cfg: DictConfig) -> bool:
    """Whether Lightning will start the ranks > 0 by re-running this script (ddp, not ddp_spawn)."""
    strategy = str(cfg.trainer.get("strategy", ""))
    return strategy.startswith("ddp") and "spawn" not in strategy and "notebook" not in strategy


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
