"""Start-up costs what torch costs: the modules `run.py` imports leave Lightning, torchmetrics, timm and
torchvision for the code that runs them (`uad.utils.lazy`, the imports inside `uad.pipeline`'s functions)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("lightning", "torchmetrics", "timm", "torchvision", "cv2", "scipy", "wandb")


def test_run_py_imports_leave_the_heavy_packages() -> None:
    code = (
        "import sys, hydra, omegaconf, uad.errors, uad.pipeline; "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == []


def test_lazy_package_attributes_still_resolve() -> None:
    import uad.data
    import uad.encoders
    import uad.metrics

    assert uad.data.AnomalyDataModule.__module__ == "uad.data.datamodule"
    assert uad.metrics.EvalProtocol.__name__ == "EvalProtocol"
    assert "Encoder" in dir(uad.encoders)
    with pytest.raises(AttributeError, match="not_a_metric"):
        uad.metrics.not_a_metric  # noqa: B018
