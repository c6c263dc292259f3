"""Running `run.py` as a user would, in a subprocess, for the integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PYTHONPATH = os.pathsep.join(p for p in [str(ROOT / "src"), os.environ.get("PYTHONPATH")] if p)
ENV = {**os.environ, "PYTHONPATH": PYTHONPATH, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
FEATREC = ["debug=tiny"]  # the fast FeatRec baseline on small synthetic data
SWEEP_TINY = [*FEATREC, "dataset.classes=[weave]"]


def run_py(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python run.py <args>` in `cwd`; fails the test with the command's output tails if it fails."""
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc
