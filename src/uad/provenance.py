"""Where a result came from: the run's identity, the code's commit, the package versions, the machine."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

PACKAGES = (
    "uad",
    "torch",
    "lightning",
    "timm",
    "hydra-core",
    "torchmetrics",
    "opencv-python-headless",
    "pillow",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
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
        "git_commit": git_commit(),
        "versions": package_versions(),
        "machine": platform.node(),
    }
