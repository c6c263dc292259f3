"""`make gpu-check` (bench/gpu_check.py): one line and exit 0 without a GPU; its section of bench/results.md
is replaced in place, the rest of the file kept."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_one_line_and_exit_0(tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(results)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [load_script().NO_GPU]
    assert not results.exists()


def test_section_replaced_in_place_rest_kept(tmp_path: Path) -> None:
    gpu_check = load_script()
    results = tmp_path / "results.md"
    results.write_text("# Benchmarks\n\n## A\n\na\n")
    gpu_check.write_section([gpu_check.SECTION, "", "first"], results)
    results.write_text(results.read_text() + "\n## B\n\nb\n")
    gpu_check.write_section([gpu_check.SECTION, "", "second"], results)
    text = results.read_text()
    assert text.count(gpu_check.SECTION) == 1
    assert "second" in text and "first" not in text
    assert text.index("## A") < text.index(gpu_check.SECTION) < text.index("## B")
