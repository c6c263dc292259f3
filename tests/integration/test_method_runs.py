"""Each paper method trained and evaluated end to end through its real config on the tiny synthetic data.
The networks alone are tested in tests/unit/methods/ (one file a method), their blocks in tests/unit/nn/."""

from __future__ import annotations

import pytest
import torch

from tests.unit.methods.test_dualad import TINY_DUALAD
from uad import pipeline
from uad.checkpoint import load_module
from uad.metrics import METRIC_NAMES


def test_uniad_tiny_train_and_evaluate_produces_metrics(tiny_cfg):
    cfg = tiny_cfg("method=uniad", "method.model.neighbor_size=3")
    results = pipeline.run(cfg)
    assert set(results["per_class"]) == {"weave", "nut", "pill"}
    for metrics in results["per_class"].values():
        assert all(v is None or 0.0 <= v <= 1.0 for v in metrics.values())
        assert set(metrics) == set(METRIC_NAMES)
        assert metrics["I-AUROC"] is not None and metrics["P-AUROC"] is not None
    assert results["run"]["trainable_params"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["dinov2_vits14_reg", "effnet_lite0"])
def test_dinomaly_tiny_train_and_evaluate(backbone, tiny_cfg):
    cfg = tiny_cfg(
        "method=dinomaly",
        f"backbone={backbone}",
        "backbone.pretrained=false",
        "protocol.image_size=56",
        "protocol.crop_size=null",
        "protocol.eval_size=null",
        "dataset.classes=[weave,nut]",
    )
    results = pipeline.run(cfg)
    assert set(results["per_class"]) == {"weave", "nut"}
    assert all(0.0 <= v <= 1.0 for v in results["mean"].values() if v is not None)
    assert results["run"]["method"] == "dinomaly" and results["run"]["trainable_params"] > 0


@pytest.mark.parametrize("method", ["dualad_he", "dualad_ho"])
def test_dualad_train_and_evaluate_on_synthetic(method, tiny_cfg):
    results = pipeline.run(tiny_cfg(f"method={method}", *TINY_DUALAD))
    assert set(results["per_class"]) == {"weave", "nut", "pill"}
    assert results["run"]["method"] == method and results["protocol"]["name"] == "dualad224"
    assert all(0.0 <= v <= 1.0 for v in results["mean"].values() if v is not None)


@pytest.mark.slow
def test_patchcore_fit_is_one_pass_without_optimiser_and_the_checkpoint_carries_the_banks(tiny_cfg):
    cfg = tiny_cfg("method=patchcore", "trainer.max_epochs=3")
    results = pipeline.run(cfg)
    assert results["mean"]["I-AUROC"] is not None
    checkpoint = pipeline.Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    module, _ = load_module(checkpoint)
    saved = torch.load(checkpoint, weights_only=False)  # re-saved by the threshold calibration at the end
    assert saved["global_step"] == 0 and saved["epoch"] <= 1  # one fitting pass of the three asked
    assert saved["uad"]["thresholds"]  # no optimiser step; the fit's checkpoint got the calibration
    assert module.net.bank_class.unique().tolist() == [0, 1, 2]  # weave, nut, pill
    images = torch.randn(2, 3, 64, 64)
    assert torch.isfinite(module.net(images, torch.tensor([0, 2])).anomaly_map).all()
