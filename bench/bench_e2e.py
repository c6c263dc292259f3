"""End-to-end throughput of the default run (`python run.py`): training and evaluation images/s and the
wall time of the whole command, on the embedded synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={out}", "callbacks.progress=null"]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        results = json.loads((out / "results.json").read_text())
    run, tp = results["run"], results["run"]["throughput"]
    print("## End to end: `python run.py` (default method on the synthetic data)\n")
    print(
        f"Command: `python run.py` ({run['method']} / {run['backbone']} / {run['dataset']}, "
        f"protocol {run['protocol']}, {run['trainable_params']:,} trainable parameters).\n"
    )
    print("| stage | seconds | images/s |")
    print("|---|---|---|")
    print(f"| training (all epochs) | {tp['train_seconds']:.1f} | {tp['train_images_per_s']:.1f} |")
    print(f"| evaluation (test set + metrics) | {tp['test_seconds']:.1f} | {tp['test_images_per_s']:.1f} |")
    print(f"| whole command | {wall:.1f} | |")
    mean = results["mean"]
    print(
        f"\nMean metrics: I-AUROC {100 * mean['I-AUROC']:.1f}, P-AUROC {100 * mean['P-AUROC']:.1f}, "
        f"AUPRO {100 * mean['AUPRO']:.1f}."
    )


if __name__ == "__main__":
    main()
