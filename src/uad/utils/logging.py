"""One logger name for the whole suite; rank-zero aware so DDP children stay quiet."""

from __future__ import annotations

import logging
import os

from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's own flag, without Lightning

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # Lightning's order


def _rank_from_environment() -> int:
    """The rank Lightning gives `rank_zero_only` on import (it keeps a rank already set; its strategies
    overwrite it once the processes exist), so that logging works before Lightning is imported."""
    return next((int(os.environ[key]) for key in RANK_VARIABLES if key in os.environ), 0)


if getattr(rank_zero_only, "rank", None) is None:
    rank_zero_only.rank = _rank_from_environment()


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    for level in ("debug", "info", "warning", "error", "critical"):
        setattr(logger, level, rank_zero_only(getattr(logger, level)))
    return logger
