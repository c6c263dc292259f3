"""Every method at its paper resolution: trainable parameters, GFLOPs per image, and training and
inference images/s of the whole model (frozen encoder included), with random weights and random images;
then how close each comes to this machine's limit: its fp32 matmul peak (GFLOP/s), the GFLOP/s each
training step and evaluation forward reaches as a fraction of it, and the operators that take the step's
time (torch.profiler, self time).

FLOPs are counted on the forward (`mode=describe`, 2 per multiply-add); a training step is counted as the
encoder's forward plus 3x the trainable part's (forward, and a backward of about twice the forward: the
gradients of the inputs and of the weights; none flows into the frozen encoder).

The cases are the paper pairings; a case whose method config is not in `conf/method/` is listed as absent.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from uad.builders import build_encoder, build_module, build_net, build_protocol  # noqa: E402
from uad.describe import describe  # noqa: E402

# (method, backbone, extra overrides): the backbones each paper reports, plus the offline default encoder.
CASES = [
    ("featrec", "effnet_lite0", []),
    ("uniad", "effnet_lite0", []),
    ("uniad", "effb4", []),
    ("dinomaly", "effnet_lite0", []),
    ("dinomaly", "dinov2_vits14_reg", []),
    ("dinomaly", "dinov2_vitb14_reg", []),
    ("dualad_he", "effnet_lite0", []),
    ("dualad_he", "wres50", []),
    ("dualad_ho", "wres50", []),
]
CUDA = torch.cuda.is_available()
BATCH = 16 if CUDA else 2
STEPS = 20 if CUDA else 3
PEAK_SIZE, PEAK_REPEATS = 2048, 10


def matmul_peak_gflops(size: int = PEAK_SIZE, repeats: int = PEAK_REPEATS) -> tuple[float, float]:
    """The machine's fp32 matmul rate: the best of `repeats` (size x size) @ (size x size) products, as
    GFLOP per wall second and per CPU second of this process (2 size^3 FLOPs each); the best, because a
    shared machine only ever slows a product down."""
    device = torch.device("cuda" if CUDA else "cpu")
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best_wall = best_cpu = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        _sync()
        start, cpu = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        _sync()
        best_wall = min(best_wall, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return 2 * size**3 / best_wall / 1e9, 2 * size**3 / max(best_cpu, 1e-9) / 1e9


def profiled(step) -> tuple[list, str, float]:
    """One step under torch.profiler: its operator averages, the self-time attribute read (device time on a
    GPU, CPU time otherwise) and that attribute's total."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if CUDA else [])]
    with profile(activities=activities) as prof:
        step()
        _sync()
    events = prof.key_averages()
    attr = "self_device_time_total" if CUDA else "self_cpu_time_total"
    return events, attr, sum(getattr(e, attr) for e in events) or 1.0


def top_names(events: list, attr: str, total: float, count: int = 3) -> str:
    """The `count` operators of `profiled`'s events with the most self time, with their share of it."""
    top = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:count]
    return ", ".join(f"{e.key.removeprefix('aten::')} {100 * getattr(e, attr) / total:.0f}%" for e in top)


def top_ops(step, count: int = 3) -> str:
    """The `count` operators with the most self time in one step, with their share of the step's."""
    return top_names(*profiled(step), count)


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _images_per_s(step, images: torch.Tensor) -> tuple[float, float]:
    """Images per wall second, and per CPU second of this process (all threads: on a shared machine the
    work done, whatever the other jobs take)."""
    step(images)  # warm-up: allocations, cuDNN autotuning, lazy buffers
    _sync()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(STEPS):
        step(images)
    _sync()
    count = STEPS * images.shape[0]
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def build_case(
    overrides: list[str], device: torch.device
) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict, int]:
    """The network (on `device`), its optimiser, its `describe` figures and its input size, composed from
    the real configs with `overrides` (Hydra command-line syntax)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "mode=describe"])
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        with open_dict(cfg):
            cfg.paths.output_dir = tmp
            cfg.paths.root_dir = str(ROOT)  # no Hydra run: its `${hydra:...}` paths are set by hand
        info = describe(cfg, Path(tmp))
    protocol = build_protocol(cfg)
    model = build_net(cfg, build_encoder(cfg, protocol)).to(device)
    optimizer = build_module(cfg, model).configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    return model, optimizer, info, protocol.input_size


def optimiser_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, output, step: int = 0) -> None:
    """Loss of `output` (the method's, at optimiser step `step`), backward and one optimiser step."""
    losses = model.loss(output, step)
    loss = losses["loss"] if isinstance(losses, dict) else losses
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure(method: str, backbone: str, extra: list[str]) -> dict | None:
    if not (ROOT / "conf" / "method" / f"{method}.yaml").exists():
        return None
    overrides = [f"method={method}", f"backbone={backbone}", *extra]
    if backbone != "effnet_lite0":
        overrides.append("backbone.pretrained=false")  # speed does not depend on the weights
    device = torch.device("cuda" if CUDA else "cpu")
    model, optimizer, info, size = build_case(overrides, device)
    images = torch.randn(BATCH, 3, size, size, device=device)

    def train_step(x: torch.Tensor) -> None:
        optimiser_step(model, optimizer, model(x))

    @torch.no_grad()
    def infer_step(x: torch.Tensor) -> None:
        model(x)

    model.train()
    train_ips, train_cpu = _images_per_s(train_step, images)
    train_ops = top_ops(lambda: train_step(images))
    model.eval()
    infer_ips, infer_cpu = _images_per_s(infer_step, images)
    infer_ops = top_ops(lambda: infer_step(images))
    train_gflop = 2 * info["gmacs_encoder"] + 3 * 2 * info["gmacs_trainable"]
    return {
        **info,
        "train_ips": train_ips,
        "infer_ips": infer_ips,
        "train_gflops": (train_gflop * train_ips, train_gflop * train_cpu),  # per wall s, per CPU s
        "infer_gflops": (info["gflops"] * infer_ips, info["gflops"] * infer_cpu),
        "train_ops": train_ops,
        "infer_ops": infer_ops,
    }


def main() -> None:
    torch.manual_seed(0)
    peaks = [matmul_peak_gflops()]
    print("## Methods: parameters, FLOPs and throughput\n")
    print(
        f"Command: `python bench/bench_methods.py`. Random weights and images, batch {BATCH}, "
        f"{STEPS} timed steps after one warm-up, fp32, on {'the GPU' if CUDA else 'the CPU'}. "
        "Training = forward + loss + backward + optimiser step; inference = forward (anomaly map "
        "included). GFLOPs per image of the whole model (encoder + trainable part).\n"
    )
    header = ["method", "backbone", "input", "trainable params", "GFLOPs (encoder + rest)", "train img/s"]
    print("| " + " | ".join([*header, "infer img/s"]) + " |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    only = set(sys.argv[1:])  # e.g. `bench_methods.py dualad_he:wres50`: those cases only
    for method, backbone, extra in CASES:
        if only and f"{method}:{backbone}" not in only:
            continue
        row = measure(method, backbone, extra)
        rows.append((method, backbone, row))
        if row is None:
            print(f"| {method} | {backbone} | | (no `conf/method/{method}.yaml`) | | | |")
            continue
        print(
            f"| {method} | {backbone} | {row['input_size']} | {row['trainable_params']:,} | "
            f"{row['gflops']:.2f} ({2 * row['gmacs_encoder']:.2f} + {2 * row['gmacs_trainable']:.2f}) | "
            f"{row['train_ips']:.3g} | {row['infer_ips']:.3g} |",
            flush=True,
        )
    peaks.append(matmul_peak_gflops())
    print_limit(rows, peaks)


def _reached(gflops: tuple[float, float], peak_wall: float, peak_cpu: float) -> str:
    wall, cpu = gflops
    return f"{wall:.1f} ({wall / peak_wall:.0%}) / {cpu:.1f} ({cpu / peak_cpu:.0%})"


def print_limit(rows: list, peaks: list[tuple[float, float]]) -> None:
    peak_wall, peak_cpu = max(p[0] for p in peaks), max(p[1] for p in peaks)
    print("\n### The limit: fraction of this machine's fp32 matmul peak\n")
    print(
        f"Peak: {peak_wall:.0f} GFLOP/s (wall) and {peak_cpu:.0f} GFLOP per CPU second, the best of "
        f"{PEAK_REPEATS} fp32 {PEAK_SIZE}x{PEAK_SIZE} matmuls with {torch.get_num_threads()} threads, "
        f"measured before and after the cases ({', '.join(f'{w:.0f}/{c:.0f}' for w, c in peaks)}). "
        "Reached = GFLOPs per image x images per wall second (per CPU second) over the timed steps; a "
        "training step counts the encoder's forward + 3x the trainable part's. Each cell: wall GFLOP/s "
        "(% of the wall peak) / GFLOP per CPU s (% of the CPU-second peak); on a shared machine the "
        "CPU-second fraction is the one that holds. Top operators: self time in one profiled step "
        "(`torch.profiler`).\n"
    )
    print(
        "| method | backbone | training step reached | evaluation forward reached "
        "| training top ops | evaluation top ops |"
    )
    print("|---|---|---|---|---|---|")
    for method, backbone, row in rows:
        if row is None:
            continue
        print(
            f"| {method} | {backbone} | {_reached(row['train_gflops'], peak_wall, peak_cpu)} | "
            f"{_reached(row['infer_gflops'], peak_wall, peak_cpu)} | "
            f"{row['train_ops']} | {row['infer_ops']} |"
        )


if __name__ == "__main__":
    main()
