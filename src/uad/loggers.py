"""Experiment loggers that never block a run: W&B falls back to offline mode without a login."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from uad.utils.logging import get_logger

log = get_logger(__name__)


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(save_dir: str, offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """A WandbLogger that goes offline (with a one-line note and the sync command) when there is no login.

    `offline=None` decides by the environment: WANDB_MODE=offline/disabled is respected, otherwise the run
    is online only when an API key is configured.
    """
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
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=save_dir, offline=offline, **kwargs)
