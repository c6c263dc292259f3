"""Learning curves that choose the default: mean I-AUROC, P-AUROC and AUPRO of each method against its
training cost, on the small real set (`../shared/realdata`, unified) and the synthetic set, Lite0 weights.

The cost axis is the process's CPU-seconds spent training (`time.process_time`, all threads; evaluations are
excluded), not wall time: the 2-core machine is shared, so wall time depends on the neighbours. The budget
"10 minutes on 2 cores" is 1200 CPU-seconds. Each run trains once and is evaluated at a few optimiser steps
(PatchCore once, after its one fitting pass). Writes bench/default_curves.png, bench/default_curves.json and
the "Learning curves" section of bench/results.md.

    PYTHONPATH=src python bench/bench_default.py [--only LABEL ...] [--data real|synthetic]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback, Trainer
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from uad.builders import build_datamodule, build_encoder, build_module, build_net, build_protocol  # noqa: E402
from uad.metrics.functional import compute_metrics  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"
DATA = {
    "real": ["dataset=mvtec", f"dataset.root={REALDATA}", "dataset.strict=false"],
    "synthetic": ["dataset=synthetic"],
}
CURVE_METRICS = ("I-AUROC", "P-AUROC", "AUPRO")
BUDGET_CPU_S = 1200.0  # "10 minutes on 2 cores"
# (label, overrides, optimiser steps at which to evaluate; None = a fitted method, evaluated once)
RUNS = [
    ("patchcore-lite0", ["method=patchcore"], None),
    ("patchcore-lite1", ["method=patchcore", "backbone=effnet_lite1"], None),
    ("featrec-lite0", ["method=featrec"], [9, 27]),
    (
        "dinomaly-lite0",
        ["method=dinomaly", "method.scheduler.warmup_steps=5", "method.model.hm_warmup_steps=10"],
        [10, 30, 60],
    ),
    ("uniad-lite0", ["method=uniad"], [9, 27]),
    ("dualad_he-lite0", ["method=dualad_he"], [9, 27, 45]),
]
SECTION = "## Learning curves: the default's choice"


def compose_run(overrides: list[str], output_dir: Path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.output_dir = str(output_dir)
    return cfg


@torch.no_grad()
def evaluate(module, datamodule, protocol) -> dict[str, float]:
    """Class means of the curve metrics, through the same protocol steps as the Evaluator."""
    was_training = module.training
    module.eval()
    per_class: dict[str, dict[str, list]] = {}
    for batch in datamodule.test_dataloader():
        maps = protocol.maps_for_eval(module.net(batch["image"], batch["class_id"]).anomaly_map)
        scores = protocol.image_scores(maps)
        masks = protocol.masks_for_eval(batch["mask"])
        for i, name in enumerate(batch["class_name"]):
            parts = per_class.setdefault(name, {"scores": [], "labels": [], "maps": [], "masks": []})
            for key, value in zip(parts, (scores[i], batch["label"][i], maps[i], masks[i])):
                parts[key].append(value)
    module.train(was_training)
    results = {name: compute_metrics(*(torch.stack(v) for v in p.values())) for name, p in per_class.items()}
    mean = {m: sum(r[m] for r in results.values()) / len(results) for m in CURVE_METRICS}
    return {**mean, "per_class": {n: {m: r[m] for m in CURVE_METRICS} for n, r in results.items()}}


class CurvePoints(Callback):
    """Evaluates at the given steps (or once after a fit); the CPU time of evaluations is not counted."""

    def __init__(self, steps: list[int] | None, datamodule, protocol, on_point: Callable) -> None:
        self.steps, self.datamodule, self.protocol, self.on_point = steps, datamodule, protocol, on_point
        self.points: list[dict] = []
        self.excluded = 0.0
        self.start = time.process_time()

    def _point(self, module, step: int) -> None:
        cost = time.process_time() - self.start - self.excluded
        begin = time.process_time()
        metrics = evaluate(module, self.datamodule, self.protocol)
        self.excluded += time.process_time() - begin
        self.points.append({"step": step, "cpu_s": round(cost, 1), **metrics})
        self.on_point(self.points)  # each point is saved at once: an interrupted curve keeps its start
        print(f"  step {step}: {cost:.0f} CPU-s " + " ".join(f"{m} {metrics[m]:.3f}" for m in CURVE_METRICS))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.steps and trainer.global_step in self.steps:
            self._point(pl_module, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.steps is None:
            self._point(pl_module, 0)


def run_curve(overrides: list[str], steps: list[int] | None, on_point: Callable) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run([*overrides, "logger=none", "callbacks=none", "dataset.num_workers=0"], Path(tmp))
        torch.manual_seed(cfg.seed)
        protocol = build_protocol(cfg)
        datamodule = build_datamodule(cfg, protocol)
        curve = CurvePoints(steps, datamodule, protocol, on_point)  # the clock starts before the encoder
        module = build_module(cfg, build_net(cfg, build_encoder(cfg, protocol)))
        limits = {"max_epochs": 1} if steps is None else {"max_steps": max(steps), "max_epochs": 10_000}
        trainer = Trainer(
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            gradient_clip_val=cfg.method.get("grad_clip"),
            callbacks=[curve],
            **limits,
        )
        trainer.fit(module, datamodule=datamodule)


def write_outputs(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (ROOT / "bench" / "default_curves.json").write_text(json.dumps(results, indent=1))
    datasets = sorted({key.split("/")[0] for key in results})
    fig, axes = plt.subplots(len(datasets), 3, figsize=(13, 3.6 * len(datasets)), squeeze=False)
    for row, data in enumerate(datasets):
        for col, metric in enumerate(CURVE_METRICS):
            ax = axes[row][col]
            for key, points in results.items():
                if key.startswith(data + "/") and points:
                    x = [p["cpu_s"] for p in points]
                    ax.plot(x, [p[metric] for p in points], "o-", label=key.split("/")[1])
            ax.axvline(BUDGET_CPU_S, color="grey", linestyle=":")
            ax.set(title=f"{data}: {metric}", xlabel="training CPU-seconds", ylim=(0, 1.02))
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "default_curves.png", dpi=90)

    lines = [
        SECTION,
        "",
        "`PYTHONPATH=src python bench/bench_default.py` (Lite0/Lite1 weights, unified, seed 133). Cost = the "
        "process's training CPU-seconds (`time.process_time`, evaluations excluded): the 2 cores were shared "
        "with other jobs, so wall time is not comparable. Budget: 1200 CPU-s (10 minutes on 2 cores). "
        "Curves: [default_curves.png](default_curves.png).",
        "",
        "| data | run | step | CPU-s | I-AUROC | P-AUROC | AUPRO | lowest class I-AUROC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, points in results.items():
        data, label = key.split("/")
        for p in points:
            low = min(p["per_class"].items(), key=lambda kv: kv[1]["I-AUROC"])
            values = " | ".join(f"{p[m]:.3f}" for m in CURVE_METRICS)
            lines.append(
                f"| {data} | {label} | {p['step'] or 'fit'} | {p['cpu_s']:.0f} | {values} | "
                f"{low[0]} {low[1]['I-AUROC']:.3f} |"
            )
    path = ROOT / "bench" / "results.md"
    text = path.read_text()
    text = re.sub(rf"\n{re.escape(SECTION)}\n.*?(?=\n## |\Z)", "", text, flags=re.S).rstrip("\n")
    path.write_text(text + "\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="labels to (re)measure; the others keep their last points")
    parser.add_argument("--data", nargs="*", default=list(DATA), choices=list(DATA))
    args = parser.parse_args()
    torch.set_num_threads(2)
    stored = ROOT / "bench" / "default_curves.json"
    for data in args.data:
        for label, overrides, steps in RUNS:
            if args.only and label not in args.only:
                continue
            print(f"{data} / {label}", flush=True)
            run_curve([*DATA[data], *overrides], steps, partial(save, stored, f"{data}/{label}"))


def save(stored: Path, key: str, points: list[dict]) -> None:
    """Merge one run's points into the stored results (re-read: another invocation may have added its
    runs meanwhile) and rewrite the outputs."""
    results = json.loads(stored.read_text()) if stored.is_file() else {}
    write_outputs({**results, key: points})


if __name__ == "__main__":
    main()
