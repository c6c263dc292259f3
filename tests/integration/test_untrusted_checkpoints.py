"""Issue 23 (trust): a malicious checkpoint through `mode=eval`, `mode=predict` and `mode=export` is refused
with one line and exit 1, and the code it hides never runs (tests/helpers/evil_checkpoints.py builds them;
tests/unit/test_checkpoint.py drives them through the loaders and `uad.load`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict
from PIL import Image

from tests.conftest import ROOT, compose_config
from tests.helpers import evil_checkpoints as evil
from tests.helpers.commands import ENV
from uad import pipeline
from uad.checkpoint import CheckpointError

MODES = ("eval", "predict", "export")


def make(case: str, folder: Path, marker: Path, cfg) -> Path:
    if case in evil.TARGETS:
        return evil.TARGETS[case](folder, marker, cfg)
    return evil.PICKLES[case](folder, marker)


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "good.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("mode", MODES)
def test_every_malicious_file_is_refused_by_every_mode(mode, tiny_cfg, tmp_path, image):
    base = tiny_cfg(f"mode={mode}", f"predict.input={image}")
    for case in sorted({**evil.PICKLES, **evil.TARGETS}):
        folder = tmp_path / case
        folder.mkdir()
        marker = folder / "pwned"
        cfg = base.copy()
        with open_dict(cfg):
            cfg.ckpt_path = str(make(case, folder, marker, base))
            cfg.paths.output_dir = str(folder / "run")
        with pytest.raises(CheckpointError) as refused:
            pipeline.run(cfg)
        assert "\n" not in str(refused.value), (case, str(refused.value))
        assert not marker.exists(), case


def run_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={cwd / 'run'}"]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


# Each case once, each mode three times: the subprocess runs that `python run.py` users make.
RUNS = [
    ("eval", "zip"),
    pytest.param("eval", "official_uniad", marks=pytest.mark.slow),
    pytest.param("eval", "dtypes_trick", marks=pytest.mark.slow),
    pytest.param("predict", "legacy_magic", marks=pytest.mark.slow),
    pytest.param("predict", "target_torchload", marks=pytest.mark.slow),
    pytest.param("predict", "legacy_tar", marks=pytest.mark.slow),
    pytest.param("export", "uad_ckpt", marks=pytest.mark.slow),
    pytest.param("export", "legacy", marks=pytest.mark.slow),
    pytest.param("export", "target_savetxt", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("mode", "case"), RUNS)
def test_run_py_refuses_a_malicious_file_in_one_line(mode, case, tiny_cfg, tmp_path, image):
    marker = tmp_path / "pwned"
    path = make(case, tmp_path, marker, tiny_cfg())
    extra = ["method=uniad", "backbone=effb4"] if case == "official_uniad" else []
    proc = run_py(
        "debug=tiny", f"mode={mode}", f"ckpt_path={path}", f"predict.input={image}", *extra, cwd=tmp_path
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: checkpoint '{path}'") and "Traceback" not in proc.stderr
    assert "refused" in lines[0]
    assert not marker.exists()


# Real last.ckpt files of the default method and of a trained one still open and rebuild their network
# (FeatRec: tests/integration/test_evaluate.py). Dinomaly on the Lite0 CNN variant keeps it small.
REAL = {
    "patchcore": ["method=patchcore"],
    "dinomaly": ["method=dinomaly", "backbone=effnet_lite0", "protocol=r224", "trainer.max_steps=2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(REAL))
def test_a_real_last_ckpt_evaluates_as_its_training_run(method, tmp_path, data_dir, image):
    """A real last.ckpt evaluates as its training run and predicts through run.py (whose own Hydra app is
    put back after the checkpoint's groups are composed from conf/)."""
    tiny = ["debug=tiny", "dataset.classes=[weave]"]
    train = [*tiny, *REAL[method]]
    trained = pipeline.run(compose_config(train, output_dir=tmp_path / "run", data_dir=data_dir))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    again = [*tiny, "mode=eval", f"ckpt_path={ckpt}"]  # the method comes from the file
    results = pipeline.run(compose_config(again, output_dir=tmp_path / "eval", data_dir=data_dir))
    assert results["per_class"] == trained["per_class"]
    assert results["run"]["evaluated_checkpoint"]["layout"] == "uad"
    (tmp_path / "pred").mkdir()
    proc = run_py("mode=predict", f"ckpt_path={ckpt}", f"predict.input={image}", cwd=tmp_path / "pred")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = (tmp_path / "pred" / "run" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 2  # the header and the image
