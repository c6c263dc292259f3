"""End to end through the real configs: train + evaluate, describe, results files, crash safety."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import ROOT
from uad import builders, pipeline
from uad.data.synthetic import DEFECTS
from uad.metrics import METRIC_NAMES


def _check_results(results: dict, classes: set[str]) -> None:
    assert results["format"] == "uad-results/1"
    assert set(results["per_class"]) == classes
    for metrics in [*results["per_class"].values(), results["mean"]]:
        assert set(metrics) == set(METRIC_NAMES)
        assert all(v is None or 0.0 <= v <= 1.0 for v in metrics.values())
    assert results["protocol"]["name"] and results["run"]["method"]


def test_train_and_evaluate_writes_every_results_file(tiny_cfg, monkeypatch):
    from uad import results as results_module

    written = []
    real_write = results_module.write_json
    monkeypatch.setattr(
        results_module, "write_json", lambda path, data: written.append(path) or real_write(path, data)
    )
    cfg = tiny_cfg()
    results = pipeline.run(cfg)
    out = pipeline.Path(cfg.paths.output_dir)
    _check_results(results, {"weave", "nut", "pill"})
    assert written == [out / "results.json"]  # once, with every part of the run in it
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results and on_disk["extra"]["thresholds"]["image"] is not None
    assert on_disk["run"]["selection"] == {"selected_on_test_set": False} and "seed" in on_disk["run"]
    assert (out / "results.csv").read_text().splitlines()[0].split(",") == ["class", *METRIC_NAMES]
    assert "| mean |" in (out / "results.md").read_text()
    test_images = sum(2 + len(defects) for defects in DEFECTS.values())  # 2 good + 1 per defect kind
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + test_images
    assert list((out / "overlays").glob("*.png"))
    assert (out / "config_resolved.yaml").is_file()
    assert results["run"]["trainable_params"] > 0 and results["run"]["throughput"]["train_images_per_s"] > 0
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_second_run_reuses_the_cached_synthetic_tree(tiny_cfg):
    cfg = tiny_cfg()
    datamodule = builders.build_datamodule(cfg, builders.build_protocol(cfg))
    datamodule.prepare_data()
    manifest = datamodule.data_root / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    pipeline.run(tiny_cfg("dataset.classes=[weave]"))
    assert manifest.stat().st_mtime_ns == stamp


def test_describe_reports_params_shapes_and_flops(tiny_cfg):
    cfg = tiny_cfg("mode=describe")
    info = pipeline.run(cfg)
    on_disk = json.loads((pipeline.Path(cfg.paths.output_dir) / "describe.json").read_text())
    assert on_disk["trainable_params"] == info["trainable_params"] > 0
    assert info["frozen_params"] > 0 and set(info["per_module"]) == {"autoencoder"}
    assert info["shapes"]["anomaly_map"] == [1, 1, 64, 64]
    assert info["shapes"]["aligned"] == [1, 16 + 24 + 40 + 112, 4, 4]
    assert info["gmacs"] > info["gmacs_encoder"] > 0


def test_a_failing_class_is_named_and_the_others_are_kept(tiny_cfg, monkeypatch):
    from uad.callbacks import evaluation

    real, calls = evaluation.compute_metrics, []

    def fails_on_the_second_class(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "compute_metrics", fails_on_the_second_class)
    results = pipeline.run(tiny_cfg())
    assert len(results["errors"]) == 1 and len(results["per_class"]) == 2
    ((failed, message),) = results["errors"].items()
    assert "simulated failure" in message and failed not in results["per_class"]
    out = pipeline.Path(tiny_cfg().paths.output_dir)
    assert json.loads((out / "results.json").read_text())["errors"] == {failed: message}
    assert all(not math.isnan(v) for v in results["mean"].values() if v is not None)


def test_separate_setting_trains_one_model_per_class_into_one_table(tiny_cfg):
    cfg = tiny_cfg("dataset.setting=separate", "dataset.classes=[weave,pill]")
    results = pipeline.run(cfg)
    _check_results(results, {"weave", "pill"})
    out = pipeline.Path(cfg.paths.output_dir)
    assert (out / "classes" / "weave" / "results.json").is_file()
    assert json.loads((out / "results.json").read_text())["per_class"].keys() == {"weave", "pill"}


def test_checkpoint_holds_only_the_trainable_state(tiny_cfg, tmp_path):
    from lightning.pytorch import Trainer

    cfg = tiny_cfg()
    protocol = builders.build_protocol(cfg)
    model = builders.build_module(cfg, builders.build_net(cfg, builders.build_encoder(cfg, protocol)))
    trainer = Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=builders.build_datamodule(cfg, protocol))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    state = checkpoint["state_dict"]
    assert state and all(k.startswith("net.") for k in state)
    assert not [k for k in state if k.startswith("net.encoder.")]
    assert checkpoint["uad"]["config"]["method"]["name"] == "featrec"  # the checkpoint can rebuild its net
    optimizer = trainer.optimizers[0]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in model.net.encoder.parameters())
    fresh = builders.build_module(cfg, builders.build_net(cfg, builders.build_encoder(cfg, protocol)))
    fresh.on_load_checkpoint({"state_dict": state})
    fresh.load_state_dict(state, strict=False)
    for name, value in state.items():
        assert torch.equal(fresh.state_dict()[name], value)
    with pytest.raises(KeyError, match="lacks trainable tensors"):
        fresh.on_load_checkpoint({"state_dict": {}})


def test_wandb_logger_runs_offline_without_a_login(tiny_cfg, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    from uad.loggers import wandb_logger

    assert wandb_logger(save_dir=str(tmp_path / "w"), project="uad-test", name="t")._offline
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not wandb_logger(save_dir=str(tmp_path / "w"), project="uad-test", name="t")._offline


def test_a_user_error_prints_its_message_alone_and_exits_1(tmp_path):
    """run.py: a missing dataset root is one message naming the key and the layout, no traceback, and it
    comes before the network is built."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "run.py",
            "dataset=mvtec",
            f"dataset.root={tmp_path / 'nope'}",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert f"error: MVTec AD root '{tmp_path / 'nope'}' does not exist. Set dataset.root" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "effnet_lite0" not in done.stderr  # the encoder was never built
