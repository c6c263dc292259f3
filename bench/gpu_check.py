"""`make gpu-check`: on a CUDA machine, each trained method's paper recipe for a fixed number of optimiser
steps, within about 8 minutes; images/s and peak GPU memory into bench/results.md, naming the GPU.

Per recipe (random weights: the GPU machine may have no network; speed does not depend on the weights),
the recipe's batch size, forward + loss + backward + gradient clipping + the optimiser `AnomalyModule`
builds, in these variants:
- `fp32`: the whole network (frozen encoder + trainable part), as a run without the cache;
- `fp32 cache`: the trainable part on stored features (`feature_cache=memory`);
- `bf16`, `bf16 cache`: the same under `torch.autocast(bfloat16)` (`trainer.precision=bf16-mixed`);
- `compile bf16 cache`: `method.compile=true` on top (the compile time is reported apart);
then the official training step beside ours (`bench_official.py`) where `--official DIR` (or
`UAD_OFFICIAL_DIR`) holds the checkouts, and DDP over 2 GPUs (fp32, no cache) where there are 2.

Usage: `python bench/gpu_check.py [--official DIR] [--steps 20] [--budget 420]`. Without a GPU it prints
one line and exits 0. A variant that would start after `--budget` seconds is listed as skipped.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

RECIPES = {  # experiment: label
    "uniad_mvtec": "UniAD / EfficientNet-B4 224",
    "dinomaly_mvtec": "Dinomaly / ViT-B/14 reg 392",
    "dualad_mvtec": "DualAD-He / WRes50 224",
}
VARIANTS = ("fp32", "fp32 cache", "bf16", "bf16 cache", "compile bf16 cache")
SECTION = "## GPU check (`make gpu-check`)"
NO_GPU = "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is false); nothing to check."


def build(experiment: str, compile_net: bool = False, device: str = "cuda"):
    """The recipe's network on `device`, its optimiser (as `AnomalyModule` builds it), clip and batch size."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from uad import builders

    GlobalHydra.instance().clear()
    overrides = [
        f"experiment={experiment}",
        "backbone.pretrained=false",
        f"method.compile={compile_net}",
        f"paths.root_dir={ROOT}",  # no Hydra run: its `${hydra:...}` paths are set by hand
        f"paths.output_dir={tempfile.gettempdir()}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    protocol = builders.build_protocol(cfg)
    net = builders.build_net(cfg, builders.build_encoder(cfg, protocol)).to(device).train()
    optimizer = builders.build_module(cfg, net).configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    return net, optimizer, cfg.method.get("grad_clip"), int(cfg.dataset.batch_size), protocol.input_size


def make_step(net, optimizer, clip, images: torch.Tensor, cached: bool, bf16: bool):
    """One training step on a fixed batch; `cached` starts from the stored features (computed once)."""
    size = tuple(images.shape[-2:])
    params = [p for p in net.parameters() if p.requires_grad]
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        stored = net.extract(images) if cached else None

    def step() -> None:
        with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            if stored is None:
                with torch.no_grad():
                    features = net.extract(images)
            else:
                features = stored
            losses = net.loss(net.reconstruct(features, size), 0)
        loss = losses["loss"] if isinstance(losses, dict) else losses
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()

    return step


def timed(step, steps: int, batch: int) -> tuple[float, float, float]:
    """(images/s over `steps` timed steps, seconds of the first (warm-up) step, peak GiB allocated)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()  # warm-up: cuDNN autotuning, lazy allocations, compilation
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start), first, torch.cuda.max_memory_allocated() / 2**30


def recipe_rows(experiment: str, steps: int, deadline: float) -> list[str]:
    rows = []
    for variant in VARIANTS:
        label = f"| {RECIPES[experiment]} | {variant} |"
        if time.perf_counter() > deadline:
            rows.append(f"{label} skipped: time budget | | | |")
            continue
        net, optimizer, clip, batch, size = build(experiment, compile_net="compile" in variant)
        images = torch.randn(batch, 3, size, size, device="cuda")
        try:
            step = make_step(net, optimizer, clip, images, cached="cache" in variant, bf16="bf16" in variant)
            ips, first, peak = timed(step, steps, batch)
            rows.append(f"{label} {batch} | {ips:.1f} | {peak:.2f} | {first:.1f} |")
        except Exception as err:  # one failing variant is reported, the others still run
            rows.append(f"{label} {batch} | failed: {type(err).__name__}: {str(err)[:120]} | | |")
        del net, optimizer, images
        torch.cuda.empty_cache()
        print(rows[-1], flush=True)
    return rows


def official_rows(base: str | None) -> list[str]:
    if not base:
        return ["Official step: skipped (give `--official DIR` or `UAD_OFFICIAL_DIR` with UniAD/, ...)."]
    import bench_official

    rows = [
        f"Official training step beside ours (`bench_official.py`, batch {bench_official.BATCH}, fp32, "
        f"median of {bench_official.REPEATS} in turn; official code from `{base}`):",
        "",
        "| method | official images/s | ours images/s | ours / official |",
        "|---|---|---|---|",
    ]
    for folder, compare in (
        ("UniAD", bench_official.uniad),
        ("DualAD", bench_official.dualad),
        ("Dinomaly", bench_official.dinomaly),
    ):
        checkout = Path(base) / folder
        if not checkout.is_dir():
            rows.append(f"| {folder} | skipped: no {checkout} | | |")
            continue
        try:
            r = compare(checkout)
            o, u = r["official_images_per_s"], r["ours_images_per_s"]
            rows.append(f"| {folder} | {o:.1f} | {u:.1f} | {u / o:.2f}x |")
        except Exception as err:
            rows.append(f"| {folder} | failed: {type(err).__name__}: {str(err)[:120]} | | |")
        print(rows[-1], flush=True)
    return rows


def _ddp_worker(rank: int, world: int, experiment: str, steps: int, out: str) -> None:
    torch.distributed.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    net, optimizer, clip, batch, size = build(experiment, device=f"cuda:{rank}")
    net = torch.nn.parallel.DistributedDataParallel(Whole(net), device_ids=[rank])  # same parameters
    images = torch.randn(batch, 3, size, size, device=f"cuda:{rank}")

    def step() -> None:
        loss = net(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()

    ips, _, peak = timed(step, steps, batch)
    if rank == 0:
        Path(out).write_text(f"{ips * world:.1f} {peak:.2f} {batch}")
    torch.distributed.destroy_process_group()


class Whole(torch.nn.Module):
    """The network's training loss as a module's forward, the form DDP wraps."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.net.extract(images)
        losses = self.net.loss(self.net.reconstruct(features, tuple(images.shape[-2:])), 0)
        return losses["loss"] if isinstance(losses, dict) else losses


def ddp_rows(steps: int, deadline: float) -> list[str]:
    if torch.cuda.device_count() < 2:
        return [f"DDP: skipped ({torch.cuda.device_count()} GPU)."]
    rows = ["DDP on 2 GPUs (fp32, no cache, the recipe's batch per GPU; images/s of both):", ""]
    rows += ["| recipe | batch/GPU | images/s | peak GiB (rank 0) |", "|---|---|---|---|"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    for experiment, label in RECIPES.items():
        if time.perf_counter() > deadline:
            rows.append(f"| {label} | skipped: time budget | | |")
            continue
        with tempfile.NamedTemporaryFile(suffix=".txt") as out:
            try:
                torch.multiprocessing.spawn(_ddp_worker, args=(2, experiment, steps, out.name), nprocs=2)
                ips, peak, batch = Path(out.name).read_text().split()
                rows.append(f"| {label} | {batch} | {ips} | {peak} |")
            except Exception as err:
                rows.append(f"| {label} | failed: {type(err).__name__}: {str(err)[:120]} | | |")
        print(rows[-1], flush=True)
    return rows


def write_section(lines: list[str], results: Path, section: str = SECTION) -> None:
    """Replace (or add) this script's section of bench/results.md; the rest of the file is kept."""
    from results_section import write_section as replace

    replace(results, section, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", default=os.environ.get("UAD_OFFICIAL_DIR"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later variants are skipped")
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    start = time.perf_counter()
    deadline = start + args.budget
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32, as the parity numerics
    torch.backends.cudnn.allow_tf32 = False
    gpu = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    lines = [
        SECTION,
        "",
        f"GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}. Command: "
        f"`python bench/gpu_check.py --steps {args.steps}`. Random weights, random images at the recipe's "
        "size and batch; a step = forward + loss + backward + clipping + optimiser; images/s over "
        f"{args.steps} steps after one warm-up step (its seconds: `first s`, compilation included); peak = "
        "`torch.cuda.max_memory_allocated`. fp32 with TF32 off.",
        "",
        "| recipe | variant | batch | images/s | peak GiB | first s |",
        "|---|---|---|---|---|---|",
    ]
    for experiment in RECIPES:
        lines += recipe_rows(experiment, args.steps, deadline)
    lines += ["", *official_rows(args.official), "", *ddp_rows(args.steps, deadline)]
    lines += ["", f"_gpu_check.py took {time.perf_counter() - start:.0f} s._", ""]
    write_section(lines, args.results)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
