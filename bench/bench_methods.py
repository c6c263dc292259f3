"""Every method at its paper resolution: trainable parameters, GFLOPs per image, and training and
inference images/s of the whole model (frozen encoder included), with random weights and random images.

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


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _images_per_s(step, images: torch.Tensor) -> float:
    step(images)  # warm-up: allocations, cuDNN autotuning, lazy buffers
    _sync()
    start = time.perf_counter()
    for _ in range(STEPS):
        step(images)
    _sync()
    return STEPS * images.shape[0] / (time.perf_counter() - start)


def measure(method: str, backbone: str, extra: list[str]) -> dict | None:
    if not (ROOT / "conf" / "method" / f"{method}.yaml").exists():
        return None
    overrides = [f"method={method}", f"backbone={backbone}", "mode=describe", *extra]
    if backbone != "effnet_lite0":
        overrides.append("backbone.pretrained=false")  # speed does not depend on the weights
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        with open_dict(cfg):
            cfg.paths.output_dir = tmp
        info = describe(cfg, Path(tmp))

    device = torch.device("cuda" if CUDA else "cpu")
    protocol = build_protocol(cfg)
    model = build_net(cfg, build_encoder(cfg, protocol)).to(device)
    optimizer = build_module(cfg, model).configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    images = torch.randn(BATCH, 3, protocol.input_size, protocol.input_size, device=device)

    def train_step(x: torch.Tensor) -> None:
        losses = model.loss(model(x))
        loss = losses["loss"] if isinstance(losses, dict) else losses
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def infer_step(x: torch.Tensor) -> None:
        model(x)

    model.train()
    train_ips = _images_per_s(train_step, images)
    model.eval()
    infer_ips = _images_per_s(infer_step, images)
    return {**info, "train_ips": train_ips, "infer_ips": infer_ips}


def main() -> None:
    torch.manual_seed(0)
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
    for method, backbone, extra in CASES:
        row = measure(method, backbone, extra)
        if row is None:
            print(f"| {method} | {backbone} | | (no `conf/method/{method}.yaml`) | | | |")
            continue
        print(
            f"| {method} | {backbone} | {row['input_size']} | {row['trainable_params']:,} | "
            f"{row['gflops']:.2f} ({2 * row['gmacs_encoder']:.2f} + {2 * row['gmacs_trainable']:.2f}) | "
            f"{row['train_ips']:.1f} | {row['infer_ips']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
