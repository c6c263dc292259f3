"""An MVTec-size evaluation (1,725 maps at 256 x 256, 15 classes, through the Metric states) stays within
6 GB peak resident memory; measured in a fresh process by bench/bench_metrics.py's own worker."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_mvtec_size_evaluation_within_6_gb():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_metrics.py"), "--worker", "ours"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["results"]) == 15
    assert all(math.isfinite(v) for r in out["results"] for v in r.values())
    assert out["peak_mb"] < 6 * 1024, f"peak RSS {out['peak_mb']:.0f} MB"
