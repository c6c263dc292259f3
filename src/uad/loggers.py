"""Experiment loggers that never block a run: W&B falls back to offline mode without a login.

With `logger=wandb` a run logs its config, training curves, the per-class results table, the mean metrics
as summary values and the overlay images; runs of one multirun share a W&B group (the sweep folder's name)
and are named `method-backbone-dataset`; a run resumed with `ckpt_path=` continues the same W&B run (the
id is kept in the run folder, `wandb_run_id.txt`). The leaderboard of a sweep goes to the same group.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import secrets
import string
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from uad.utils.hydra_job import multirun_job
from uad.utils.io import write_text
from uad.utils.logging import get_logger

log = get_logger(__name__)
RUN_ID_FILE = "wandb_run_id.txt"


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _go_offline(offline: bool | None, save_dir: str | Path) -> bool:
    """`offline=None` decides by the environment: WANDB_MODE=offline/disabled is respected, otherwise the
    run is online only when an API key is configured. Going offline is said in one line, with the sync
    command."""
    mode = os.environ.get("WANDB_MODE", "")
    if offline is None:
        offline = mode in ("offline", "dryrun") or (mode != "disabled" and not _wandb_logged_in())
    if offline and mode != "disabled":
        log.warning(
            "W&B: no login configured; logging offline under %s/wandb. Upload later with: "
            "wandb sync %s/wandb/offline-run-*",
            save_dir,
            save_dir,
        )
    return offline


def sweep_group() -> str | None:
    """The W&B group of the current Hydra multirun (its sweep folder's name); None for a single run."""
    job = multirun_job()
    return None if job is None else group_of(Path(job.sweep.dir))


def group_of(sweep_dir: Path) -> str:
    return f"sweep-{sweep_dir.name}"


def _run_id(save_dir: Path, run_id: str | None, resume_from: str | None) -> str:
    """The id given, else the id of the run that wrote the checkpoint we resume from, else a new one."""
    if run_id is None and resume_from:
        previous = Path(resume_from).resolve().parent.parent / RUN_ID_FILE  # <run>/checkpoints/last.ckpt
        if previous.is_file():
            run_id = previous.read_text().strip()
            log.info("W&B: resuming run %s of %s", run_id, previous.parent)
    if run_id is None:
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if rank_zero_only.rank == 0:
        write_text(save_dir / RUN_ID_FILE, run_id + "\n")
    return run_id


class UadWandbLogger(WandbLogger):
    """A WandbLogger that also takes uad's results: the per-class table, the mean metrics as summary
    values and the overlay PNGs (the Evaluator calls `log_results_table`)."""

    def __init__(self, *args: Any, overlays_dir: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.overlays_dir = Path(overlays_dir) if overlays_dir else None

    @rank_zero_only
    def log_results_table(self, results: dict[str, Any]) -> None:
        metrics = results["metrics"]
        rows = [[name, *(m.get(k) for k in metrics)] for name, m in results["per_class"].items()]
        rows.append(["mean", *(results["mean"].get(k) for k in metrics)])
        self.log_table("test/per_class", columns=["class", *metrics], data=rows)
        for key, value in results["mean"].items():
            if value is not None:
                self.experiment.summary[f"mean/{key}"] = value
        overlays = sorted(self.overlays_dir.glob("*.png")) if self.overlays_dir else []
        if overlays:
            self.log_image("test/overlays", [str(p) for p in overlays], caption=[p.stem for p in overlays])


def wandb_logger(
    save_dir: str,
    offline: bool | None = None,
    group: str | None = None,
    id: str | None = None,  # wandb's name for the run id
    resume_from: str | None = None,
    **kwargs: Any,
) -> UadWandbLogger:
    """The W&B logger of one run: offline without a login, grouped by sweep, resumable by id."""
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    offline = _go_offline(offline, save_dir)
    return UadWandbLogger(
        save_dir=save_dir,
        offline=offline,
        group=group or sweep_group(),
        id=_run_id(Path(save_dir), id, resume_from),
        **kwargs,
    )


def tensorboard_logger(save_dir: str, **kwargs: Any) -> TensorBoardLogger:
    """Lightning's TensorBoardLogger, or one clear error when no TensorBoard writer is installed (Lightning's
    own fails only at the first logged value, naming the value)."""
    if not any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX")):
        raise ImportError(
            "logger=tensorboard needs the tensorboard package: pip install 'uad[tensorboard]' "
            "(or pip install tensorboard), or choose logger=csv"
        )
    return TensorBoardLogger(save_dir=save_dir, **kwargs)


def log_leaderboard(
    columns: list[str],
    rows: list[list[Any]],
    heatmap: Path | None,
    sweep_dir: Path,
    project: str | None = None,
) -> None:
    """Send a sweep's leaderboard (its table and heat map) to W&B as one run of the sweep's group."""
    import wandb

    offline = _go_offline(None, sweep_dir)
    run = wandb.init(
        project=project,
        group=group_of(sweep_dir),
        job_type="leaderboard",
        name=f"leaderboard-{sweep_dir.name}",
        dir=str(sweep_dir),
        mode="offline" if offline else None,
    )
    try:
        payload: dict[str, Any] = {"leaderboard": wandb.Table(columns=columns, data=rows)}
        if heatmap:
            payload["leaderboard_heatmap"] = wandb.Image(str(heatmap))
        run.log(payload)
    finally:
        run.finish()


def finish_wandb(failed: bool) -> None:
    """Sequential multirun jobs share the process: close this job's W&B run before the next starts."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
