"""How training cost grows with the number of classes: CPU and wall seconds of one training epoch against
1, 2, 4, 8 generated classes of TRAIN images each (bench/growth_classes.png beside the table).

Classes are the embedded synthetic generator's (uad/data/synthetic.py: weave, nut, pill), class k drawn
from generator k mod 3 with seed k // 3, so every class is new images. Two methods, built from their real
configs (Hydra compose) on the packaged Lite0 weights at 224 px:
- the default, PatchCore: one epoch = features of every training image + each class's greedy coreset;
- Dinomaly (the trained method of experiment=quick_dinomaly), unified: one epoch = ceil(images / BATCH)
  optimiser steps (forward, loss, backward, StableAdamW), every step timed.
Image decoding is not timed (the images are generated once, in memory). One torch thread, in one process.

    python bench/bench_classes.py [--classes 1 2 4 8] [--write]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

RESULTS = ROOT / "bench" / "results.md"
PLOT = ROOT / "bench" / "growth_classes.png"
SECTION = "## Growth of training: one epoch against the number of classes"
TRAIN, BATCH, SIZE = 16, 8, 224


def class_images(k: int) -> torch.Tensor:
    """TRAIN generated training images of class k, (TRAIN, 3, SIZE, SIZE), ImageNet-normalised."""
    import torch.nn.functional as F

    from uad.data.synthetic import SYNTHETIC_CLASSES, SyntheticSpec, generate_image

    spec = SyntheticSpec(seed=k // 3)
    name = SYNTHETIC_CLASSES[k % len(SYNTHETIC_CLASSES)]
    images = [generate_image(spec, name, "train", "good", i)[0] for i in range(TRAIN)]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def build(method: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from uad.builders import build_encoder, build_module, build_net, build_protocol

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={method}", "backbone=effnet_lite0", "protocol=r224"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(ROOT / "outputs")  # no Hydra run: its `${hydra:...}` paths set by hand
        cfg.paths.root_dir = str(ROOT)
    protocol = build_protocol(cfg)
    net = build_net(cfg, build_encoder(cfg, protocol))
    optimizer = None
    if method != "patchcore":
        optimizer = build_module(cfg, net).configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    return net, optimizer


def patchcore_epoch(net, images: torch.Tensor, class_id: torch.Tensor) -> None:
    with torch.no_grad():
        patches = torch.cat([net.extract(b)["patches"] for b in images.split(BATCH)])
        net.fit({"patches": patches}, class_id)


def trained_epoch(net, optimizer, images: torch.Tensor, generator: torch.Generator) -> None:
    net.train()
    for step, rows in enumerate(torch.randperm(len(images), generator=generator).split(BATCH)):
        losses = net.loss(net(images[rows]), step=step)
        loss = losses["loss"] if isinstance(losses, dict) else losses
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def timed(fn, *args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(counts: list[int]) -> list[dict]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pool = [class_images(k) for k in range(max(counts))]
    rows = []
    for method in ("patchcore", "dinomaly"):
        for n in counts:
            net, optimizer = build(method)
            images = torch.cat(pool[:n])
            class_id = torch.arange(n).repeat_interleave(TRAIN)
            load = os.getloadavg()[0]
            with torch.no_grad():
                net.encoder(images[:2])  # warm-up, not timed
            if method == "patchcore":
                wall, cpu = timed(patchcore_epoch, net, images, class_id)
            else:
                wall, cpu = timed(trained_epoch, net, optimizer, images, torch.Generator().manual_seed(0))
            rows.append(
                {
                    "method": method,
                    "classes": n,
                    "images": len(images),
                    "steps": 1 if method == "patchcore" else math.ceil(len(images) / BATCH),
                    "wall": wall,
                    "cpu": cpu,
                    "load": (load + os.getloadavg()[0]) / 2,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for method in ("patchcore", "dinomaly"):
        part = [r for r in rows if r["method"] == method]
        left.plot([r["classes"] for r in part], [r["cpu"] for r in part], "o-", label=method)
        right.plot([r["classes"] for r in part], [r["cpu"] / r["images"] for r in part], "o-", label=method)
    left.set(xlabel="classes", ylabel="CPU s per epoch", title=f"one epoch, {TRAIN} images per class")
    right.set(xlabel="classes", ylabel="CPU s per training image", title="per image")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--write", action="store_true", help="replace this script's section of results.md")
    args = parser.parse_args()
    rows = measure(args.classes)
    plot(rows)
    loads = [r["load"] for r in rows]
    lines = [
        SECTION,
        "",
        f"Command: `python bench/bench_classes.py --classes {' '.join(map(str, args.classes))}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; 1 torch thread; load average "
        f"{min(loads):.1f}-{max(loads):.1f} on the shared 2-core VM: read CPU s). {TRAIN} generated "
        f"training images per class, {SIZE} px, Lite0 ImageNet weights, batch {BATCH}; PatchCore (the "
        "default, coreset 0.1 per class) = features + coresets; Dinomaly (unified, its config's optimiser) "
        "= every optimiser step of the epoch. Plot: `bench/growth_classes.png`.",
        "",
        "| method | classes | images | steps | epoch wall s | epoch CPU s | CPU s per image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['classes']} | {r['images']} | {r['steps']} | {r['wall']:.1f} | "
            f"{r['cpu']:.1f} | {r['cpu'] / r['images']:.3f} |"
        )
    print("\n".join(lines))
    if args.write:
        from results_section import write_section

        write_section(RESULTS, SECTION, lines)


if __name__ == "__main__":
    main()
