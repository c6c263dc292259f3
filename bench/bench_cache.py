"""The frozen-feature cache (`feature_cache=memory`): its bytes per image and for a full MVTec AD training set
per paper recipe, one training step with and without it, and (`--e2e`) the acceptance runs end to end.

Usage: `python bench/bench_cache.py [--e2e]` (make bench runs it without --e2e: the end-to-end pair trains
DualAD-He/WRes50 for 3 epochs twice, too long for every bench run on a CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from uad import builders  # noqa: E402
from uad.data.feature_cache import FeatureCache  # noqa: E402
from uad.module import AnomalyModule  # noqa: E402

MVTEC_TRAIN_IMAGES = 3629
RECIPES = {  # the paper recipes' configs, random weights (only the shapes matter)
    "Dinomaly ViT-B/14 392": ["experiment=dinomaly_mvtec", "backbone=dinov2_vitb14_reg"],
    "UniAD EfficientNet-B4 224": ["experiment=uniad_mvtec"],
    "DualAD-He WRes50 224": ["experiment=dualad_mvtec"],
}
STEP_CONFIG = ["method=dualad_he", "backbone=wres50", "dataset=synthetic"]  # the acceptance configuration
E2E = [
    "method=dualad_he",
    "backbone=wres50",
    "backbone.pretrained=false",
    "dataset=synthetic",
    "trainer.max_epochs=3",
    "seed=1",
    "trainer.deterministic=true",
]


def config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, "backbone.pretrained=false"])


def build(overrides: list[str]):
    cfg = config(overrides)
    protocol = builders.build_protocol(cfg)
    net = builders.build_net(cfg, builders.build_encoder(cfg, protocol))
    return cfg, net, protocol.input_size


@torch.no_grad()
def memory_rows() -> list[str]:
    rows = [
        "| recipe | features (per image) | bytes/image fp32 | bf16 | MVTec AD train (3,629) fp32 | bf16 |",
        "|---|---|---|---|---|---|",
    ]
    for name, overrides in RECIPES.items():
        _, net, size = build(overrides)
        features = net.eval().extract(torch.randn(1, 3, size, size))
        shapes = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in features.items())
        fp32 = sum(v[0].numel() for v in features.values()) * 4
        total = fp32 * MVTEC_TRAIN_IMAGES / 2**30
        rows.append(
            f"| {name} | {shapes} | {fp32:,} | {fp32 // 2:,} | {total:.2f} GiB | {total / 2:.2f} GiB |"
        )
    return rows


def step_rows(batch: int = 4, repeats: int = 3) -> list[str]:
    """One optimiser step on the same batch: encoder + trainable part, against cached features + the same
    trainable part (the median of `repeats`, after one warm-up step each)."""
    torch.manual_seed(0)
    cfg, net, size = build(STEP_CONFIG)
    net.train()
    module = AnomalyModule(net, instantiate(cfg.method.optimizer))  # train_output: the path under test
    optimizer = module.configure_optimizers()  # as in training (AdamW fused)
    images, index = torch.randn(batch, 3, size, size), torch.arange(batch)
    cache = FeatureCache("memory")
    cache.bind(batch)
    cache.features({"image": images, "index": index}, net.extract)

    def step(with_cache: bool) -> float:
        start = time.perf_counter()
        module.feature_cache = cache if with_cache else None
        batch_in = {"index": index} if with_cache else {"image": images, "index": index}
        loss = net.loss(module.train_output(batch_in))
        loss = loss["loss"] if isinstance(loss, dict) else loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    seconds = {}
    for with_cache in (False, True):
        step(with_cache)
        seconds[with_cache] = sorted(step(with_cache) for _ in range(repeats))[repeats // 2]
    plain, cached = batch / seconds[False], batch / seconds[True]
    return [
        f"One training step, DualAD-He / WRes50 (random weights) at {size} px, batch {batch}, "
        f"median of {repeats} (`{' '.join(STEP_CONFIG)}`; decoding excluded):",
        "",
        "| path | s/step | images/s |",
        "|---|---|---|",
        f"| encoder + trainable part (no cache) | {seconds[False]:.2f} | {plain:.2f} |",
        f"| cached features + trainable part | {seconds[True]:.2f} | {cached:.2f} |",
        f"| ratio | | {cached / plain:.2f}x |",
    ]


def optimizer_rows(repeats: int = 5) -> list[str]:
    """One AdamW step over DualAD-He's trainable parameters, torch's default (single-tensor) against the
    fused kernel `AnomalyModule` picks, the two in turn (median of `repeats` after a warm-up step): wall and
    CPU seconds (process time, all threads)."""
    torch.manual_seed(0)
    cfg, net, _ = build(STEP_CONFIG)
    params = list(net.trainable_parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    optimizers = {fused: instantiate(cfg.method.optimizer)(params, fused=fused) for fused in (False, True)}
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for optimizer in optimizers.values():
        optimizer.step()  # allocates the moments
    for _ in range(repeats):
        for fused, optimizer in optimizers.items():
            wall, cpu = time.perf_counter(), time.process_time()
            optimizer.step()
            times[fused].append((time.perf_counter() - wall, time.process_time() - cpu))
    median = {f: [sorted(t[i] for t in times[f])[repeats // 2] for i in (0, 1)] for f in times}
    count = sum(p.numel() for p in params)
    return [
        f"One AdamW step over DualAD-He's {count / 1e6:.1f} M trainable parameters ({len(params)} tensors), "
        f"the two in turn, median of {repeats}:",
        "",
        "| AdamW | wall s/step | CPU s/step |",
        "|---|---|---|",
        f"| single-tensor (torch's default) | {median[False][0]:.3f} | {median[False][1]:.3f} |",
        f"| fused (`AnomalyModule` default) | {median[True][0]:.3f} | {median[True][1]:.3f} |",
        f"| ratio | {median[False][0] / median[True][0]:.2f}x | {median[False][1] / median[True][1]:.2f}x |",
    ]


def e2e_rows() -> list[str]:
    rows = [
        "| feature_cache | train images/s | train s | mean I-AUROC | P-AUROC | AUPRO |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for cache in ("none", "memory"):
            out = Path(tmp) / cache
            cmd = [sys.executable, "run.py", *E2E, f"feature_cache={cache}", "callbacks.progress=null"]
            subprocess.run([*cmd, f"hydra.run.dir={out}"], cwd=ROOT, check=True, capture_output=True)
            results = json.loads((out / "results.json").read_text())
            tp, mean = results["run"]["throughput"], results["mean"]
            rows.append(
                f"| {cache} | {tp['train_images_per_s']:.2f} | {tp['train_seconds']:.0f} | "
                f"{mean['I-AUROC']:.4f} | {mean['P-AUROC']:.4f} | {mean['AUPRO']:.4f} |"
            )
    return [f"Command: `python run.py {' '.join(E2E)} feature_cache=none|memory`", "", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--e2e", action="store_true", help="also run the two end-to-end trainings")
    args = parser.parse_args()
    print("## Frozen-feature cache\n")
    print("Bytes per training image (`net.extract` of one image, `backbone.pretrained=false`):\n")
    print("\n".join(memory_rows()) + "\n")
    print("\n".join(step_rows()) + "\n")
    print("\n".join(optimizer_rows()) + "\n")
    if args.e2e:
        print("\n".join(e2e_rows()))
    else:
        print(
            "End to end with and without the cache: `python bench/bench_cache.py --e2e` (not in make bench)."
        )


if __name__ == "__main__":
    main()
