"""Acceptance of issue 23 (parts 2-4), through `run.py` as a user runs it: SIGTERM mid-epoch leaves
"interrupted" and a checkpoint that resumes to the uninterrupted run's metrics; kill -9 is reported as
"died"; a second run is kept out of a live run's folder; predict scores around a decompression bomb; and
one sweep of faults, each of which ends in one line that names the key or file, exit status 1, no
traceback and nothing written."""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.helpers.commands import ENV, FEATREC

ENV_TESTS = {**ENV, "PYTHONPATH": os.pathsep.join([ENV["PYTHONPATH"], str(ROOT)])}  # tests.helpers
KILL = "+callbacks.kill._target_=tests.helpers.signals.SignalAtStep"


def _start(*args: str, cwd: Path, importtime: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), str(ROOT / "run.py"), *args]
    return subprocess.Popen(
        cmd, cwd=cwd, env=ENV_TESTS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen, timeout: int = 300) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (PIL refuses it as a decompression bomb on open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


# -- signals and dead runs --------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_epoch_resumes_to_the_uninterrupted_metrics(tmp_path, data_dir):
    """4 batches an epoch, 3 epochs; SIGTERM at step 6 (the middle of the second epoch)."""
    common = [*FEATREC, "trainer.max_epochs=3", f"paths.data_dir={data_dir}"]
    whole = _start(*common, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    cut = _start(*common, KILL, "+callbacks.kill.step=6", f"hydra.run.dir={tmp_path / 'cut'}", cwd=tmp_path)
    code, output = _finish(cut)
    assert code == 128 + signal.SIGTERM, output[-3000:]
    status = json.loads((tmp_path / "cut" / "status.json").read_text())
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM" and status["ended"]
    assert (
        status["checkpoint"] == str(last) and last.is_file() and not (tmp_path / "cut" / "run.lock").exists()
    )
    assert "stopped: interrupted by SIGTERM at step 6" in output and "Traceback" not in output
    assert not (tmp_path / "cut" / "results.json").exists()
    code, output = _finish(
        _start(*common, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'cut'}", cwd=tmp_path)
    )
    assert code == 0, output[-3000:]
    assert _finish(whole)[0] == 0
    uninterrupted = json.loads((tmp_path / "whole" / "results.json").read_text())["per_class"]
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())["per_class"]
    for name, metrics in uninterrupted.items():
        assert resumed[name] == pytest.approx(metrics, abs=1e-4)
    assert json.loads((tmp_path / "cut" / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_kill_9_is_reported_as_died_and_a_live_run_keeps_its_folder(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    hang = [KILL, "+callbacks.kill.step=1", "+callbacks.kill.signum=SIGCONT", "+callbacks.kill.hang=300"]
    common = [*FEATREC, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]
    first = _start(*common, *hang, cwd=tmp_path)
    try:
        for _ in range(600):
            if (run_dir / "checkpoints").exists() or first.poll() is not None:
                break
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()[1][-2000:]
        code, output = _finish(_start(*common, cwd=tmp_path))
        lines = output.strip().splitlines()
        assert code == 1 and len(lines) <= 15 and "Traceback" not in output
        assert f"in use by the run with pid {first.pid}" in lines[-1] and "hydra.run.dir" in lines[-1]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        first.kill()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "running"  # what kill -9 leaves
    shown = subprocess.run(
        [sys.executable, "-m", "uad.status", str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and shown.stdout.startswith("died") and f"pid {first.pid}" in shown.stdout


# -- predict: one image's failure is its row ---------------------------------------------------------------


@pytest.mark.slow
def test_predict_scores_around_a_bomb_and_names_every_output_uniquely(tmp_path, data_dir):
    model = tmp_path / "model"
    code, output = _finish(
        _start(
            *FEATREC,
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={model}",
            cwd=tmp_path,
        )
    )
    assert code == 0, output[-3000:]
    images = tmp_path / "in"
    (images / "x").mkdir(parents=True)
    good = next((data_dir / "synthetic").glob("*/nut/test/good/*.png"))
    Image.open(good).save(images / "good.png")
    Image.open(good).convert("RGB").save(images / "good.jpg")
    Image.open(good).save(images / "x" / "y.png")
    Image.open(good).save(images / "x__y.png")
    (images / "bomb.png").write_bytes(_png_header(30000, 30000))
    (tmp_path / "elsewhere").mkdir()
    Image.open(good).save(tmp_path / "elsewhere" / "linked.png")
    (images / "sub").symlink_to(tmp_path / "elsewhere")
    out = tmp_path / "predicted"
    code, output = _finish(
        _start(
            "mode=predict",
            f"ckpt_path={model / 'checkpoints' / 'last.ckpt'}",
            f"predict.input={images}",
            "predict.save_maps=true",
            f"hydra.run.dir={out}",
            cwd=tmp_path,
        )
    )
    assert code == 0, output[-3000:]
    with open(out / "predictions.csv", newline="") as handle:
        rows = {Path(r["path"]).relative_to(images).as_posix(): r for r in csv.DictReader(handle)}
    assert sorted(rows) == ["bomb.png", "good.jpg", "good.png", "sub/linked.png", "x/y.png", "x__y.png"]
    assert "decompression bomb" in rows["bomb.png"]["error"] and not rows["bomb.png"]["overlay"]
    scored = [r for r in rows.values() if not r["error"]]
    overlays, maps = {r["overlay"] for r in scored}, {r["map"] for r in scored}
    assert len(overlays) == len(maps) == 5 and all((out / p).is_file() for p in overlays | maps)
    assert len(list((out / "overlays").iterdir())) == 5


# -- the fault sweep ---------------------------------------------------------------------------------------

PREDICT = ["mode=predict", "ckpt_path=nowhere.ckpt", "predict.input=nowhere.png"]
# (case, overrides, words the one line must hold); every case also gets debug=tiny and its own run folder
FAULTS = [
    (
        "group option",
        ["feature_cache=false"],
        ["feature_cache=false", "disk, memory, none", "feature_cache=none"],
    ),
    ("unknown method", ["method=unaid"], ["method=unaid", "did you mean method=uniad"]),
    ("misspelt key", ["trainer.max_epochz=3"], ["trainer.max_epochz", "did you mean trainer.max_epochs"]),
    ("bad override", ["ckpt_path=a=b"], ["ckpt_path=a=b"]),
    ("max_epochs=0", ["trainer.max_epochs=0"], ["trainer.max_epochs=0", "untrained"]),
    ("batch_size=0", ["dataset.batch_size=0"], ["dataset.batch_size=0"]),
    ("predict batch", [*PREDICT, "predict.batch_size=-1"], ["predict.batch_size=-1"]),
    ("nan threshold", [*PREDICT, "predict.threshold=nan"], ["predict.threshold=nan", "finite"]),
    ("text threshold", [*PREDICT, "predict.threshold=abc"], ["predict.threshold='abc'"]),
    ("unknown mode", ["mode=bogus"], ["mode='bogus'", "predict"]),
    (
        "missing dataset root",
        ["dataset=mvtec", "paths.data_dir=/nonexistent"],
        ["MVTec AD root '/nonexistent/mvtec'", "dataset.root"],
    ),
    (
        "predict input missing",
        ["mode=predict", "ckpt_path=x.ckpt", "predict.input=/no/such.png"],
        ["predict.input", "/no/such.png"],
    ),
    ("unwritable run folder", ["hydra.run.dir={tmp}/a_file/run"], ["a_file", "hydra.run.dir"]),
    ("image size", ["protocol.image_size=7"], ["protocol.image_size", "effnet_lite0", "32"]),
    ("unknown class", ["dataset.classes=[no_such_class]"], ["dataset.classes", "no_such_class", "weave"]),
    (
        "selection metric",
        ["selection.every_n_epochs=1", "selection.metric=bogus"],
        ["selection.metric", "bogus"],
    ),
]


@pytest.fixture(scope="module")
def fault_runs(tmp_path_factory, data_dir) -> dict[str, dict]:
    """Every case's run, two at a time (start-up dominates: ~8 s with torch, ~2 s without)."""
    tmp = tmp_path_factory.mktemp("faults")
    (tmp / "a_file").write_text("not a folder")

    def one(case: tuple[str, list[str], list[str]]) -> dict:
        name, overrides, _ = case
        run_dir = tmp / "".join(c if c.isalnum() else "_" for c in name)
        args = [*FEATREC, f"paths.data_dir={data_dir}", *(o.format(tmp=tmp) for o in overrides)]
        if not any(o.startswith("hydra.run.dir") for o in overrides):
            args.append(f"hydra.run.dir={run_dir}")
        start = time.perf_counter()
        code, output = _finish(_start(*args, cwd=tmp, importtime=name == "missing dataset root"))
        return {"code": code, "output": output, "seconds": time.perf_counter() - start, "dir": run_dir}

    with ThreadPoolExecutor(2) as pool:
        return dict(zip([c[0] for c in FAULTS], pool.map(one, FAULTS)))


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides, words", FAULTS, ids=[c[0] for c in FAULTS])
def test_every_fault_ends_in_one_line_naming_the_key_or_file(fault_runs, name, overrides, words):
    run = fault_runs[name]
    imports = [line for line in run["output"].splitlines() if line.startswith("import time:")]
    lines = [line for line in run["output"].strip().splitlines() if not line.startswith("import time:")]
    assert run["code"] == 1, run["output"][-3000:]
    assert len(lines) <= 15 and "Traceback" not in run["output"], run["output"][-3000:]
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    message = " ".join(lines[first:])  # the error line (a dataset root's error goes on with its layout)
    assert all(w in message for w in words), message
    assert not any(run["dir"].glob("results.*")) and not (run["dir"] / "predictions.csv").exists()
    assert not any(run["dir"].rglob("*.ckpt")) and not any(run["dir"].rglob("*.tmp"))
    if name == "missing dataset root":  # refused before torch is imported
        assert imports and not any(line.split("|")[-1].strip() == "torch" for line in imports)
    status = run["dir"] / "status.json"
    if status.exists():  # a run that got as far as its folder says it failed, and why
        record = json.loads(status.read_text())
        assert record["status"] == "failed" and not (run["dir"] / "run.lock").exists()
