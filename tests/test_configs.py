"""Every option of every config group composes into a config that resolves (no missing keys, no typos)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_config

GROUPS = ["method", "backbone", "dataset", "protocol", "trainer", "logger", "callbacks", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes_and_resolves(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path, data_dir=tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["mode"] in ("train", "describe")
    for key in ("method", "backbone", "dataset", "protocol", "trainer"):
        assert resolved[key], f"{group}={option} leaves '{key}' empty"
    if group != "experiment":
        chosen = resolved[group] or {}
        expected = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
        if "name" in (expected or {}):
            assert chosen["name"] == expected["name"]


def test_each_method_brings_its_own_protocol(tmp_path):
    for method in _options("method"):
        cfg = compose_config([f"method={method}"], output_dir=tmp_path, data_dir=tmp_path)
        preset = OmegaConf.load(CONF_DIR / "protocol" / f"{method}.yaml")
        assert cfg.protocol.name == OmegaConf.load(CONF_DIR / "protocol" / f"{preset.defaults[0]}.yaml").name


def test_command_line_protocol_overrides_the_methods(tmp_path):
    cfg = compose_config(["protocol=dinomaly392"], output_dir=tmp_path, data_dir=tmp_path)
    assert (cfg.protocol.image_size, cfg.protocol.crop_size, cfg.protocol.eval_size) == (448, 392, 256)


def test_trainer_keys_are_lightning_arguments(tmp_path):
    import inspect

    from lightning.pytorch import Trainer

    cfg = compose_config([], output_dir=tmp_path, data_dir=tmp_path)
    accepted = set(inspect.signature(Trainer.__init__).parameters)
    unknown = [k for k in cfg.trainer if k != "_target_" and k not in accepted]
    assert not unknown, f"conf/trainer keys that Lightning's Trainer does not take: {unknown}"
