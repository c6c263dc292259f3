"""Runs that record their protocol: binned half-precision metrics, Real-IAD's sample-level metrics."""

from __future__ import annotations

import math

from tests.conftest import compose_config
from uad import pipeline


def test_binned_half_precision_run_records_its_protocol(tiny_cfg):
    results = pipeline.run(tiny_cfg("protocol.pixel_bins=4096", "protocol.map_dtype=float16"))
    assert results["protocol"]["pixel_bins"] == 4096 and results["protocol"]["map_dtype"] == "float16"
    assert all(math.isfinite(v) for v in results["mean"].values())
    assert "sample_level" not in results["extra"]  # the synthetic data has no multi-view samples


def test_real_iad_runs_report_sample_level_metrics(tmp_path):
    """A miniature Real-IAD tree (tests/data_trees.py): views share sample keys, so the results carry
    S-AUROC, S-AP and S-F1max per class and their mean."""
    from tests.helpers.data_trees import realiad_tree

    root = realiad_tree(tmp_path / "realiad")
    cfg = compose_config(
        ["debug=tiny", "dataset=realiad", f"dataset.root={root}", "dataset.images=realiad_256"],
        output_dir=tmp_path / "run",
        data_dir=tmp_path / "data",
    )
    results = pipeline.run(cfg)
    sample_level = results["extra"]["sample_level"]
    assert set(sample_level["per_class"]) == {"audiojack"}
    assert set(sample_level["mean"]) == {"S-AUROC", "S-AP", "S-F1max"}
    assert all(0.0 <= v <= 1.0 for v in sample_level["mean"].values())


def test_the_protocol_evaluates_the_map_it_names(tiny_cfg):
    """PatchCore offers its blurred map (its own) and `patch_map`; `protocol.map_name=patch_map` evaluates
    the second through the test step and the Evaluator, and results.json records the choice."""
    cfg = tiny_cfg("method=patchcore", "dataset.classes=[nut]", "protocol.map_name=patch_map")
    results = pipeline.run(cfg)
    assert results["protocol"]["map_name"] == "patch_map"
    assert all(math.isfinite(v) for v in results["mean"].values())
