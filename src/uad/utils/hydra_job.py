"""The Hydra job a run belongs to, for the code that behaves differently inside a multirun (failure
capture, DDP children, GPU pinning, W&B groups)."""

from __future__ import annotations

from typing import Any


def multirun_job() -> Any | None:
    """The Hydra config of the current job when it is part of a multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return HydraConfig.get()
    return None
