"""The metric keys of the protocol: chosen by config, validated, recorded with the results."""

from __future__ import annotations

import math

import pytest

from tests.conftest import compose_config
from uad import pipeline
from uad.metrics import EvalProtocol


def test_bad_metric_keys_are_named():
    with pytest.raises(ValueError, match=r"protocol\.pixel_bins"):
        EvalProtocol(pixel_bins=4)
    with pytest.raises(ValueError, match=r"protocol\.map_dtype 'int8'"):
        EvalProtocol(map_dtype="int8")


@pytest.mark.parametrize("preset", ["r224", "uniad224", "dualad224", "dinomaly392", "ader256"])
def test_every_preset_is_exact_and_float32_by_default(preset):
    protocol = pipeline.build_protocol(compose_config([f"protocol={preset}"]))
    assert protocol.pixel_bins is None and protocol.map_dtype == "float32"


def test_binned_half_precision_run_records_its_protocol(tiny_cfg):
    results = pipeline.run(tiny_cfg("protocol.pixel_bins=4096", "protocol.map_dtype=float16"))
    assert results["protocol"]["pixel_bins"] == 4096 and results["protocol"]["map_dtype"] == "float16"
    assert all(math.isfinite(v) for v in results["mean"].values())
    assert "sample_level" not in results["extra"]  # the synthetic data has no multi-view samples
