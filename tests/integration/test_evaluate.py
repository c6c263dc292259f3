"""mode=eval: a saved model evaluates without training into the same files; official checkpoints are read
weights-only and recognised by their keys, anything else gets one clear error."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import compose_config
from uad import pipeline
from uad.checkpoint import CheckpointError, UnsafeCheckpointError, read_checkpoint
from uad.official import OfficialCheckpointError, layout_of, recognise

TINY = ["debug=tiny"]  # conf/debug/tiny.yaml


@pytest.mark.slow
def test_eval_of_last_ckpt_gives_the_training_runs_results(tiny_cfg, tmp_path, data_dir):
    cfg = tiny_cfg()
    trained = pipeline.run(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    overrides = [*TINY, "mode=eval", f"ckpt_path={ckpt}"]
    results = pipeline.run(compose_config(overrides, output_dir=tmp_path / "eval", data_dir=data_dir))
    assert results["per_class"] == trained["per_class"]
    assert results["run"]["evaluated_checkpoint"]["layout"] == "uad"
    out = tmp_path / "eval"
    assert json.loads((out / "results.json").read_text())["mean"] == trained["mean"]
    header = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert "score" in header and "path" in header
    assert list((out / "overlays").glob("*.png"))


def test_eval_needs_an_existing_checkpoint(tiny_cfg, tmp_path):
    with pytest.raises(CheckpointError, match="needs ckpt_path"):
        pipeline.run(tiny_cfg("mode=eval"))
    with pytest.raises(CheckpointError, match="does not exist"):
        pipeline.run(tiny_cfg("mode=eval", f"ckpt_path={tmp_path / 'nope.pth'}"))


def test_a_file_of_no_known_layout_names_what_it_found(tiny_cfg, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"module.head.weight": torch.zeros(2)}}, path)
    with pytest.raises(OfficialCheckpointError, match=r"matches no known checkpoint layout.*'head.weight'"):
        pipeline.run(tiny_cfg("mode=eval", f"ckpt_path={path}"))


def test_layouts_are_recognised_with_or_without_the_ddp_prefix():
    uniad = {"backbone.a": 1, "reconstruction.transformer.encoder.layers.0.x": 1}
    dualad = {"backbone.a": 1, "reconstruction.memory_modules.0.weight": 1}
    dinomaly = {"encoder.blocks.0.x": 1, "bottleneck.0.fc1.weight": 1, "decoder.0.x": 1}
    inpformer = {**dinomaly, "aggregation.0.attn.q.weight": 1, "prototype_token": 1}  # + Dinomaly's
    layouts = ((uniad, "uniad"), (dualad, "dualad"), (dinomaly, "dinomaly"), (inpformer, "inpformer"))
    for state, layout in layouts:
        tensors = {k: torch.zeros(1) for k in state}
        assert recognise(tensors) == layout
        prefixed = {"state_dict": {f"module.{k}": v for k, v in tensors.items()}}
        assert layout_of(prefixed, "x")[0] == layout


class _Evil:
    def __reduce__(self):
        return (print, ("ran",))


def test_official_files_are_read_weights_only(tmp_path, monkeypatch):
    """An EasyDict config, numpy scalars and arrays, an argparse Namespace (what train_val.py pickles) are
    read without easydict; any other class is refused without being run."""
    easydict = types.ModuleType("easydict")

    class EasyDict(dict):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for key, value in self.items():
                setattr(self, key, value)

    EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
    easydict.EasyDict = EasyDict
    monkeypatch.setitem(sys.modules, "easydict", easydict)
    path = tmp_path / "ckpt.pth.tar"
    state = {"reconstruction.w": torch.arange(3.0)}
    extra = {"args": argparse.Namespace(lr=0.1), "mean": np.arange(4, dtype=np.float32)}
    content = {"arch": EasyDict(net=[1]), "best_metric": np.float64(0.9), "state_dict": state, **extra}
    torch.save(content, path)
    monkeypatch.delitem(sys.modules, "easydict")
    checkpoint = read_checkpoint(path)
    assert checkpoint["arch"]["net"] == [1] and checkpoint["best_metric"] == pytest.approx(0.9)
    assert checkpoint["args"].lr == 0.1 and checkpoint["mean"].tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(checkpoint["state_dict"]["reconstruction.w"], torch.arange(3.0))
    torch.save({"x": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"holds a pickle that names builtins\.print"):
        read_checkpoint(tmp_path / "evil.pth")
