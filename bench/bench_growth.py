"""How the evaluation's cost grows with the test set: wall and CPU time and peak resident memory of all
seven metrics against the number of 256 x 256 anomaly maps (Real-IAD's test set is about 50k), exact and
binned pixel metrics; a plot beside the table (bench/growth_eval.png).

The maps are synthetic (bench/synthetic_maps.py), in classes of PER_CLASS maps, fed to the metric code as
the Evaluator feeds it (states filled batch by batch, then every class's metrics); each size and mode runs
in its own subprocess so that its peak memory is its own. Generating the maps is not timed.

    python bench/bench_growth.py                         # sizes 1000 2000 4000 (what a CPU bench run affords)
    python bench/bench_growth.py --sizes 1000 10000 50000  # the issue's sizes (50k: ~17 GB of maps)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

PER_CLASS, SIZE, BATCH, BINS = 1000, 256, 32, 1 << 16
PLOT = ROOT / "bench" / "growth_eval.png"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(n: int, bins: int | None) -> dict:
    import torch

    from bench.synthetic_maps import blob_data
    from uad.metrics import compute_metrics
    from uad.metrics.stateful import ImageMetrics, PixelMetrics

    image, pixel = ImageMetrics(), PixelMetrics(bins=bins)
    class_of, filled, generate = [], 0, 0.0
    for c, start in enumerate(range(0, n, PER_CLASS)):
        count = min(PER_CLASS, n - start)
        begin = time.perf_counter()
        scores, labels, maps, masks = blob_data(500 + c % 3, n=count, size=SIZE, heavy=c % 3 == 1)
        generate += time.perf_counter() - begin
        for b in range(0, count, BATCH):
            part = slice(b, b + BATCH)
            index = torch.arange(b, min(b + BATCH, count)) + start
            image.update(scores[part], labels[part], index)
            pixel.update(maps[part], masks[part], index)
        class_of += [c] * count
        filled += count
        del scores, labels, maps, masks
    start, cpu = time.perf_counter(), time.process_time()
    rows, pix = image.records(), pixel.records()
    group = torch.tensor(class_of)[rows["index"]]
    for c in range(len(range(0, n, PER_CLASS))):
        sel = group == c
        compute_metrics(rows["score"][sel], rows["label"][sel], pix["map"][sel], pix["mask"][sel], bins=bins)
    return {
        "maps": filled,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "peak_mb": peak_mb(),
        "generate_seconds": generate,
    }


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode in ("exact", "binned"):
        part = [r for r in rows if r["mode"] == mode]
        left.plot([r["maps"] for r in part], [r["cpu_seconds"] for r in part], "o-", label=mode)
        right.plot([r["maps"] for r in part], [r["peak_mb"] / 1024 for r in part], "o-", label=mode)
    left.set(xlabel="test maps (256 x 256)", ylabel="CPU s (all threads)", title="all seven metrics")
    right.set(xlabel="test maps (256 x 256)", ylabel="peak RSS, GiB", title="peak memory")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bins", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.bins)))
        return
    rows = []
    for n in args.sizes:
        for mode, bins in (("exact", None), ("binned", BINS)):
            cmd = [sys.executable, __file__, "--worker", str(n), *(["--bins", str(bins)] if bins else [])]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append({"mode": mode, **json.loads(out.splitlines()[-1])})
    plot(rows)
    print("## Growth: evaluation cost against the number of test maps\n")
    print(
        f"Command: `python bench/bench_growth.py --sizes {' '.join(map(str, args.sizes))}`. Synthetic "
        f"{SIZE}x{SIZE} maps in classes of {PER_CLASS}, all seven metrics per class from the filled states "
        f"(exact, and binned with {BINS} bins); CPU s = the process's CPU time (all threads: what a shared "
        "machine's load does not inflate; plotted); peak = the subprocess's max RSS (Python + torch alone: "
        "~0.4 GB). Plot: `bench/growth_eval.png`.\n"
    )
    print("| maps | mode | wall s | CPU s | peak RSS GiB | s per 1k maps |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['maps']:,} | {r['mode']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
            f"{r['peak_mb'] / 1024:.2f} | {1000 * r['seconds'] / r['maps']:.1f} |"
        )


if __name__ == "__main__":
    main()
