"""One logger name for the whole suite; rank-zero aware so DDP children stay quiet."""

from __future__ import annotations

import logging

from lightning.pytorch.utilities import rank_zero_only


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    for level in ("debug", "info", "warning", "error", "critical"):
        setattr(logger, level, rank_zero_only(getattr(logger, level)))
    return logger
