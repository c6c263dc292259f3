"""Time and peak memory of all seven metrics for an MVTec-size evaluation (15 classes, 1,725 synthetic
maps at 256 x 256 = 113 M pixels): uad.metrics (exact and binned; on the GPU too when there is one)
against scikit-learn + a NumPy MVTec AD AUPRO (bench/reference_metrics.py), side by side.

Each contender runs in its own subprocess, so its peak resident memory (VmHWM, bench/procstat.py) is its
own; the maps are generated inside it (same seeds) and the generation is not timed. The reference is timed
on the first REF_CLASSES classes and scaled to 15 (the synthetic classes are alike), to keep `make bench`
short.

    python bench/bench_metrics.py                   # the Markdown section
    python bench/bench_metrics.py --worker ours     # one contender, JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import torch  # noqa: E402

from bench.procstat import status_mb  # noqa: E402

CLASSES, PER_CLASS, SIZE = 15, 115, 256  # 1,725 maps, as the MVTec AD test set
REF_CLASSES = 3
BINS = 1 << 16


def class_data(c: int):
    """Class c's synthetic test set: Gaussian, heavy-tailed (Cauchy) or tied scores in turn."""
    from bench.synthetic_maps import blob_data

    return blob_data(100 + c, n=PER_CLASS, size=SIZE, heavy=c % 3 == 1, ties=c % 3 == 2)


def peak_mb() -> float:
    return status_mb("VmHWM")


def run_ours(device: str, bins: int | None) -> dict:
    """The Evaluator's path: states filled batch by batch (CPU, float32 maps, bool masks), then every
    class's seven metrics from the de-duplicated records."""
    from uad.metrics import compute_metrics
    from uad.metrics.stateful import ImageMetrics, PixelMetrics

    baseline_mb = peak_mb()
    image, pixel = ImageMetrics(), PixelMetrics(bins=bins)
    class_of = []
    for c in range(CLASSES):
        scores, labels, maps, masks = class_data(c)
        for start in range(0, PER_CLASS, 16):
            part = slice(start, start + 16)
            index = torch.arange(start, min(start + 16, PER_CLASS)) + c * PER_CLASS
            image.update(scores[part], labels[part], index)
            pixel.update(maps[part], masks[part], index)
        class_of += [c] * PER_CLASS
        del scores, labels, maps, masks
    data_mb = peak_mb()
    if device == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    rows, pix = image.records(), pixel.records()
    group = torch.tensor(class_of)[rows["index"]]
    results = []
    for c in range(CLASSES):
        sel = group == c
        maps = pix["map"][sel].to(device)
        masks = pix["mask"][sel].to(device)
        results.append(compute_metrics(rows["score"][sel], rows["label"][sel], maps, masks, bins=bins))
    if device == "cuda":
        torch.cuda.synchronize()
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "peak_mb": peak_mb(),
        "baseline_mb": baseline_mb,
        "data_mb": data_mb,
        "results": results,
    }


def run_reference(classes: int) -> dict:
    """scikit-learn roc_auc_score, average_precision_score, precision_recall_curve (F1-max), image and
    pixel level, and the NumPy MVTec AUPRO, per class; each timed separately."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    from bench.reference_metrics import aupro_reference, f1_max

    parts = {"AUROC": 0.0, "AP": 0.0, "F1-max": 0.0, "AUPRO": 0.0}
    results, cpu = [], 0.0
    for c in range(classes):
        scores, labels, maps, masks = (t.numpy() for t in class_data(c))
        out = {}
        for level, y, s in (("I", labels, scores), ("P", masks.ravel(), maps.ravel())):
            for name, fn in (("AUROC", roc_auc_score), ("AP", average_precision_score), ("F1max", f1_max)):
                start, cpu_start = time.perf_counter(), time.process_time()
                out[f"{level}-{name}"] = float(fn(y, s))
                parts["F1-max" if name == "F1max" else name] += time.perf_counter() - start
                cpu += time.process_time() - cpu_start
        start, cpu_start = time.perf_counter(), time.process_time()
        out["AUPRO"] = aupro_reference(maps, masks)
        parts["AUPRO"] += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        results.append(out)
        del scores, labels, maps, masks
    scale = CLASSES / classes
    return {
        "seconds": scale * sum(parts.values()),
        "cpu_seconds": scale * cpu,
        "parts": {k: scale * v for k, v in parts.items()},
        "peak_mb": peak_mb(),
        "results": results,
        "classes": classes,
        "np": np.__version__,
    }


def worker(kind: str) -> dict:
    subprocess_args = [sys.executable, __file__, "--worker", kind]
    proc = subprocess.run(subprocess_args, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def max_diff(a: list[dict], b: list[dict]) -> float:
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in y)


def main() -> None:
    ours = worker("ours")
    binned = worker("binned")
    gpu = worker("gpu") if torch.cuda.is_available() else None
    ref = worker("reference")
    pixels = CLASSES * PER_CLASS * SIZE * SIZE
    print("## Metrics: all seven, every class of an MVTec-size evaluation\n")
    print(
        f"Command: `python bench/bench_metrics.py`. {CLASSES} classes x {PER_CLASS} synthetic maps at "
        f"{SIZE}x{SIZE} ({pixels / 1e6:.0f} M pixels; Gaussian, heavy-tailed and tied scores; blob defects). "
        f"Time: all seven metrics of every class from the gathered states, wall clock and process CPU time "
        f"(the CPU time is the fairer measure on a shared machine); peak: the process's max RSS (Python and "
        f"torch alone: {ours['baseline_mb']:.0f} MB; with the filled states: {ours['data_mb']:.0f} MB). "
        f"The reference is timed on {ref['classes']} classes and scaled to {CLASSES}.\n"
    )
    print(
        "| implementation | wall s (15 classes) | CPU s | CPU vs reference | peak RSS (MB) "
        "| max abs diff vs reference |"
    )
    print("|---|---|---|---|---|---|")
    rows = [("uad.metrics, exact, CPU", ours), ("uad.metrics, binned (2^16 bins), CPU", binned)]
    if gpu:
        rows.append((f"uad.metrics, exact, GPU ({torch.cuda.get_device_name(0)})", gpu))
    for name, r in rows:
        diff = max_diff(r["results"], ref["results"])
        ratio = r["cpu_seconds"] / ref["cpu_seconds"]
        print(
            f"| {name} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {ratio:.3f} "
            f"| {r['peak_mb']:.0f} | {diff:.1e} |"
        )
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in ref["parts"].items())
    print(
        f"| scikit-learn + MVTec AUPRO (NumPy) | {ref['seconds']:.1f} | {ref['cpu_seconds']:.1f} | 1 "
        f"| {ref['peak_mb']:.0f} | 0 |"
    )
    print(
        f"\nReference wall time by metric (image + pixel, scaled): {parts}. "
        "Goal: ours <= 1/3 of the reference."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["ours", "binned", "gpu", "reference"])
    args = parser.parse_args()
    if args.worker is None:
        main()
    else:
        jobs = {
            "ours": lambda: run_ours("cpu", None),
            "binned": lambda: run_ours("cpu", BINS),
            "gpu": lambda: run_ours("cuda", None),
            "reference": lambda: run_reference(REF_CLASSES),
        }
        print(json.dumps(jobs[args.worker]()))
