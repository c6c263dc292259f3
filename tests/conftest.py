"""Shared fixtures: compose the real Hydra configs with tiny, fast overrides; never touch the network."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
REALDATA = ROOT.parent / "shared" / "realdata"

torch.set_num_threads(min(2, torch.get_num_threads()))


def compose_config(
    overrides: list[str] | None = None, output_dir: Path | None = None, data_dir: Path | None = None
) -> DictConfig:
    """The real config as `python run.py <overrides>` would see it, with paths pointed at test folders."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides or []))
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        if output_dir is not None:
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(output_dir)
        if data_dir is not None:
            cfg.paths.data_dir = str(data_dir)
    return cfg


def compose_hydra_config(*overrides: str) -> DictConfig:
    """The config with its `hydra` node (launchers, sweepers), as a multirun would see it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder per test session, so the synthetic tree is generated once and reused."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_cfg(tmp_path, data_dir):
    """Factory: the tiny config (conf/debug/tiny.yaml: FeatRec on small synthetic data, one CPU epoch) with
    extra overrides, writing into this test's tmp folder. A test of a paper method names it (`method=uniad`);
    command-line choices win over the debug config's."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(["debug=tiny", *overrides], output_dir=tmp_path / "run", data_dir=data_dir)

    return make
