"""Where a training step stops on this machine, and so how far the feature cache can take it.

For the three recipes that bench_official_e2e.py runs against their official scripts (same backbone,
input and batch), on random weights and images, fp32:
- the full step: the frozen encoder's forward, then the trainable part's forward, loss, backward and
  optimiser step (what the official scripts run every step; ours equals it, bench/results.md);
- the cached step: the same without the encoder (what ours runs once the feature cache is full);
- of the cached step's self time (torch.profiler), the share of the GEMM-like operators (matrix products
  and convolutions, forward and backward) and of everything else (elementwise, normalisation, softmax,
  copies, the optimiser).
Then the ratios a cached run could reach over the full step: as measured; if everything but the GEMMs
took no time; and if, moreover, the GEMMs ran at this machine's fp32 matmul peak (the best of 2048^2
products). A 2x goal at fp32 is out of reach on this machine where the last ceiling is under 2.

    python bench/bench_limit.py [--steps 3] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(HERE)]

import torch  # noqa: E402
from bench_methods import build_case, matmul_peak_gflops, optimiser_step, profiled, top_names  # noqa: E402
from bench_official_e2e import BATCH, LABELS, OURS  # noqa: E402
from gpu_check import write_section  # noqa: E402

SECTION = "## The limit of a training step: GEMM share and the cache's ceiling"
GEMM_OPS = ("mm", "addmm", "bmm", "baddbmm", "mkldnn_convolution", "convolution_backward", "_mkldnn")


def median_seconds(step, steps: int) -> float:
    step()  # warm-up: allocations, oneDNN primitive caches
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_share(step) -> tuple[float, str]:
    """The GEMM-like operators' share of one step's self time, and the top three operators."""
    events, attr, total = profiled(step)
    gemm = sum(getattr(e, attr) for e in events if e.key.removeprefix("aten::").startswith(GEMM_OPS))
    return gemm / total, top_names(events, attr, total)


def measure(method: str, steps: int, peak: float) -> dict:
    torch.manual_seed(0)
    overrides = [*OURS[method], "backbone.pretrained=false"]
    net, optimizer, info, size = build_case(overrides, torch.device("cpu"))
    net.train()
    images = torch.randn(BATCH[method], 3, size, size)
    with torch.no_grad():
        features = net.extract(images)
    count = [0]

    def update(output) -> None:
        optimiser_step(net, optimizer, output, count[0])
        count[0] += 1

    def full() -> None:
        update(net(images))

    def cached() -> None:
        update(net.reconstruct(features, (size, size)))

    t_full, t_cached = median_seconds(full, steps), median_seconds(cached, steps)
    share, top = gemm_share(cached)
    flop = 3 * 2 * info["gmacs_trainable"] * 1e9 * BATCH[method]  # forward + backward of the trainable part
    t_gemm = share * t_cached
    return {
        "full": t_full,
        "cached": t_cached,
        "share": share,
        "top": top,
        "reached": flop / t_cached / 1e9,
        "gemm_rate": flop / t_gemm / 1e9,
        "ceilings": (t_full / t_cached, t_full / t_gemm, t_full / (flop / (peak * 1e9))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (median)")
    parser.add_argument("--methods", nargs="*", default=list(OURS), choices=list(OURS))
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    parser.add_argument("--write", action="store_true", help="replace this section of bench/results.md")
    args = parser.parse_args(argv)
    peak, _ = matmul_peak_gflops()
    rows = {method: measure(method, args.steps, peak) for method in args.methods}
    peak = max(peak, matmul_peak_gflops()[0])
    lines = [
        SECTION,
        "",
        f"`{' '.join(['python bench/bench_limit.py', *(argv or [])])}` on {torch.get_num_threads()} threads "
        f"(torch {torch.__version__}); fp32 matmul peak {peak:.0f} GFLOP/s (best 2048^2 product, "
        "before and after); median of the timed steps; method: the script's docstring.",
        "",
        "| recipe | full step s | cached step s | cached GFLOP/s (% of peak) | GEMM share of the cached "
        "step | GEMM GFLOP/s (% of peak) | top operators (cached step) | ceiling: measured / GEMMs only / "
        "GEMMs at peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, r in rows.items():
        c = r["ceilings"]
        lines.append(
            f"| {LABELS[method]} | {r['full']:.2f} | {r['cached']:.2f} | {r['reached']:.0f} "
            f"({r['reached'] / peak:.0%}) | {r['share']:.0%} | {r['gemm_rate']:.0f} "
            f"({r['gemm_rate'] / peak:.0%}) | {r['top']} | {c[0]:.2f}x / {c[1]:.2f}x / {c[2]:.2f}x |"
        )
    print("\n".join(lines))
    if args.write:
        write_section(lines, args.results, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
