"""A uad checkpoint alone rebuilds its network (uad/checkpoint.py); bad files get one clear error."""

from __future__ import annotations

import pytest
import torch

from uad import builders
from uad.checkpoint import CheckpointError, load_module


def _saved_module(cfg, path):
    module = builders.build_module(
        cfg, builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))
    )
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return module.eval()


def test_a_checkpoint_rebuilds_its_network_and_its_config_wins(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    saved = _saved_module(tiny_cfg(), tmp_path / "last.ckpt")
    images = torch.randn(2, 3, 64, 64)
    loaded, cfg = load_module(tmp_path / "last.ckpt")  # no command line: the checkpoint's config alone
    assert cfg.method.name == "featrec" and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(images).anomaly_map, saved.net(images).anomaly_map)
    other = tiny_cfg("method.model.hidden_dim=32")  # a command line that disagrees with the checkpoint
    loaded, cfg = load_module(tmp_path / "last.ckpt", other)
    assert cfg.method.model.hidden_dim == 256


def test_missing_and_foreign_checkpoints_get_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_module(tmp_path / "nope.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a uad checkpoint"):
        load_module(tmp_path / "foreign.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"\(16 bytes\) is not a torch checkpoint \(it starts with b'not '\): Unsupported operand"):
        load_module(tmp_path / "text.ckpt")
