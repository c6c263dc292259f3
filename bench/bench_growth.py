"""How the evaluation's cost grows with the test set: time and resident memory of all seven metrics against
the number of 256 x 256 anomaly maps (Real-IAD's test set is about 50k), for exact, binned and streaming
pixel metrics; a plot beside the table (bench/growth_eval.png).

The maps are synthetic (bench/synthetic_maps.py), in classes of PER_CLASS maps, fed to the metric code as
the Evaluator feeds it (states filled batch by batch, then every class's metrics); each size and mode runs
in its own subprocess, its address space capped (--budget-gib beyond what torch maps), so that its memory is
its own and a size that does not fit ends in a MemoryError, reported, not in the machine's OOM killer.
Generating the maps is not timed.

    python bench/bench_growth.py                                    # 1000 2000 4000 maps, all three modes
    python bench/bench_growth.py --sizes 1000 10000 50000 --write   # the issue's sizes (50k exact: ~15 GiB)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.procstat import status_mb  # noqa: E402

PER_CLASS, SIZE, BATCH, CHUNK, BINS, CALIBRATION = 1000, 256, 32, 200, 1 << 16, 256
PLOT = ROOT / "bench" / "growth_eval.png"
RESULTS = ROOT / "bench" / "results.md"
MODES = ("exact", "binned", "streaming")
SECTION = "## Growth of the evaluation: time and memory against the number of test maps"


def worker(n: int, mode: str, budget_gib: float) -> dict:
    import torch

    from bench.synthetic_maps import blob_data
    from uad.metrics import compute_metrics
    from uad.metrics.functional import ranking_metrics
    from uad.metrics.stateful import ImageMetrics, PixelMetrics, StreamingPixelMetrics

    torch.set_num_threads(1)
    # the budget: address space beyond what the interpreter and torch already map (a MemoryError past it)
    limit = int((status_mb("VmSize") + budget_gib * 1024) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    bins = None if mode == "exact" else BINS
    image, pixel, streams = ImageMetrics(), PixelMetrics(bins=bins), {}
    class_of, filled, generate, phase, streaming_cpu = [], 0, 0.0, "fill", 0.0
    out = {"maps": n, "load": os.getloadavg()[0]}
    try:
        for c, start in enumerate(range(0, n, PER_CLASS)):
            count = min(PER_CLASS, n - start)
            for part in range(0, count, CHUNK):  # generated in chunks: the fill's peak is the states'
                begin = time.perf_counter()
                size = min(CHUNK, count - part)
                scores, labels, maps, masks = blob_data(
                    500 + 7 * c + part, n=size, size=SIZE, heavy=c % 3 == 1
                )
                generate += time.perf_counter() - begin
                for b in range(0, size, BATCH):
                    rows = slice(b, b + BATCH)
                    index = torch.arange(b, min(b + BATCH, size)) + start + part
                    image.update(scores[rows], labels[rows], index)
                    if mode != "streaming":
                        pixel.update(maps[rows], masks[rows], index)
                        continue
                    begin = time.process_time()  # streaming counts as the maps come: that is its cost
                    streams.setdefault(c, StreamingPixelMetrics(BINS, calibration=CALIBRATION)).update(
                        maps[rows], masks[rows]
                    )
                    streaming_cpu += time.process_time() - begin
                del scores, labels, maps, masks
            class_of += [c] * count
            filled += count
        out["states_gib"] = status_mb("VmRSS") / 1024
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
        phase = "metrics"
        begin, cpu = time.perf_counter(), time.process_time()
        rows = image.records()
        group = torch.tensor(class_of)[rows["index"]]
        results = []
        if mode == "streaming":
            for c in range(len(range(0, n, PER_CLASS))):
                sel = group == c
                ranking_metrics(rows["score"][sel], rows["label"][sel])
                results.append(streams[c].compute())
        else:
            pix = pixel.records()
            for c in range(len(range(0, n, PER_CLASS))):
                sel = group == c
                results.append(
                    compute_metrics(
                        rows["score"][sel], rows["label"][sel], pix["map"][sel], pix["mask"][sel], bins=bins
                    )
                )
        out["means"] = {k: sum(r[k] for r in results) / len(results) for k in ("P-AUROC", "P-AP", "AUPRO")}
        out.update(
            seconds=time.perf_counter() - begin,
            cpu_seconds=time.process_time() - cpu + streaming_cpu,
            streaming_cpu=streaming_cpu,
        )
    except (MemoryError, RuntimeError) as err:
        if "memory" not in str(err).lower() and not isinstance(err, MemoryError):
            raise
        out["failed"] = f"{phase}: out of the {budget_gib:g} GiB budget after {filled:,} maps"
    out.update(peak_mb=status_mb("VmHWM"), generate_seconds=generate, load_end=os.getloadavg()[0])
    return out


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for i, mode in enumerate(MODES):
        part = [r for r in rows if r["mode"] == mode and "failed" not in r]
        maps, colour = [r["maps"] for r in part], f"C{i}"
        left.plot(maps, [r["cpu_seconds"] for r in part], "o-", color=colour, label=mode)
        right.plot(maps, [r["peak_mb"] / 1024 for r in part], "o-", color=colour, label=f"{mode}: peak")
        right.plot(maps, [r["states_gib"] for r in part], "x:", color=colour, label=f"{mode}: states")
        for r in rows:
            if r["mode"] == mode and "failed" in r:
                right.axvline(r["maps"], color="red", alpha=0.4, ls="--")
    left.set(xlabel="test maps (256 x 256)", ylabel="CPU s", title="all seven metrics, 1 thread")
    right.set(xlabel="test maps (256 x 256)", ylabel="GiB resident", title="memory (red: over budget)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--budget-gib", type=float, default=6.0, help="address space per size beyond torch's")
    parser.add_argument("--write", action="store_true", help="replace this script's section of results.md")
    parser.add_argument("--save", type=Path, help="also write the measured rows to this JSON file")
    parser.add_argument("--load", type=Path, nargs="+", help="report rows saved by --save; measure none")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="exact", help=argparse.SUPPRESS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.mode, args.budget_gib)))
        return
    rows = [row for path in args.load or [] for row in json.loads(path.read_text())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for n in [] if args.load else args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--worker", str(n), "--budget-gib", str(args.budget_gib)]
            cmd += ["--mode", mode]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            rows.append({"mode": mode, **json.loads(out.splitlines()[-1])})
            print(rows[-1], file=sys.stderr, flush=True)
    if args.save:
        args.save.write_text(json.dumps(rows))
    rows.sort(key=lambda r: (r["maps"], MODES.index(r["mode"])))
    plot(rows)
    sizes = sorted({r["maps"] for r in rows})
    loads = [r["load"] for r in rows] + [r["load_end"] for r in rows]
    lines = [
        SECTION,
        "",
        f"Command: `python bench/bench_growth.py --sizes {' '.join(map(str, sizes))} --budget-gib "
        f"{args.budget_gib:g}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 1 torch thread, load "
        f"average {min(loads):.1f}-{max(loads):.1f} on the shared 2-core VM: read CPU s). Synthetic "
        f"{SIZE}x{SIZE} maps in classes of {PER_CLASS}, filled into the Metric states batch by batch as the "
        f"Evaluator fills them, then all seven metrics per class: exact; binned ({BINS} rank-space bins, "
        "the maps still held); streaming (`StreamingPixelMetrics`: each batch binned and counted as it "
        f"comes, {BINS} bins fixed from the class's first {CALIBRATION} maps, then dropped; image metrics "
        "exact; its CPU s include the counting during the fill). states = resident memory once filled "
        "(interpreter + torch + uad.metrics alone: ~0.75 GiB); peak = the highest resident memory while "
        "computing the metrics (VmHWM reset after the fill); each size and mode in its own process, its "
        f"address space capped at torch's + {args.budget_gib:g} GiB (failed = a MemoryError there). "
        "P-AUROC, P-AP, AUPRO: means over the classes, to compare the modes. Plot: `bench/growth_eval.png`.",
        "",
        "| maps | mode | states GiB | peak GiB | wall s | CPU s | CPU s / 1k maps | P-AUROC | P-AP | AUPRO |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(
                f"| {r['maps']:,} | {r['mode']} | {r.get('states_gib', float('nan')):.2f} | "
                f"{r['peak_mb'] / 1024:.2f} | failed: {r['failed']} | | | | | |"
            )
            continue
        lines.append(
            f"| {r['maps']:,} | {r['mode']} | {r['states_gib']:.2f} | {r['peak_mb'] / 1024:.2f} | "
            f"{r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {1000 * r['cpu_seconds'] / r['maps']:.2f} | "
            + " | ".join(f"{r['means'][k]:.5f}" for k in ("P-AUROC", "P-AP", "AUPRO"))
            + " |"
        )
    print("\n".join(lines))
    if args.write:
        from results_section import write_section

        write_section(RESULTS, SECTION, lines)


if __name__ == "__main__":
    main()
