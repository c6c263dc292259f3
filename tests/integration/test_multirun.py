"""`python run.py -m` through Hydra's basic launcher: each job in its own folder with its own results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_two_job_multirun_writes_two_result_folders(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "debug=tiny",
        "dataset.classes=[weave]",
        "method.model.bottleneck_dim=16,32",
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "results.json").is_file())
    assert len(jobs) == 2, list(sweep.iterdir())
    dims = set()
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        assert set(results["per_class"]) == {"weave"}
        dims.add((job / ".hydra" / "overrides.yaml").read_text().count("bottleneck_dim=16"))
    assert dims == {0, 1}, "each job ran with its own override"
