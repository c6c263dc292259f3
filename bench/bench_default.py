"""Learning curves that choose the default: mean I-AUROC, P-AUROC and AUPRO of each method against its
training cost, on the small real set (`../shared/realdata`, unified) and the synthetic set.

The cost axis is the process's CPU-seconds spent training (`time.process_time`, all threads; evaluations are
excluded), not wall time: the 2-core machine is shared, so wall time depends on the neighbours (it is
recorded too). The budget "10 minutes on 2 cores" is 1200 CPU-seconds. One torch thread by default: on an
oversubscribed machine the second thread's spin-waiting counts as CPU time (PatchCore-Lite0's fit, 2
threads: 9 CPU-s alone, 29 CPU-s at load 6.7; 1 thread: 4 CPU-s at load 8.6), so one thread makes
CPU-seconds measure the work. A trained method is evaluated when its training CPU-seconds pass each fraction
of its budget in `EVAL_FRACTIONS` and stops after the last; the length of a schedule that spans the run
(Dinomaly's cosine) is the budget over a measured CPU-s per step. PatchCore is evaluated once, after its one
fitting pass.

Every evaluation point is written to bench/default_curves.json at once (atomically), and the PNG and the
"Learning curves" section of bench/results.md are regenerated from that file, so a stopped run keeps all it
finished; a run's entry says whether it reached its end (`complete`).

    PYTHONPATH=src python bench/bench_default.py [--only LABEL ...] [--data real synthetic] [--budget CPU_S]
    PYTHONPATH=src python bench/bench_default.py --render
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback, Trainer
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from uad.builders import (  # noqa: E402
    attach_feature_cache,
    build_datamodule,
    build_encoder,
    build_module,
    build_net,
    build_protocol,
)
from uad.metrics.functional import compute_metrics  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"
DATA = {
    "real": ["dataset=mvtec", f"dataset.root={REALDATA}", "dataset.strict=false"],
    "synthetic": ["dataset=synthetic"],
}
CURVE_METRICS = ("I-AUROC", "P-AUROC", "AUPRO")
BUDGET_CPU_S = 1200.0  # "10 minutes on 2 cores"
EVAL_FRACTIONS = (0.05, 0.125, 0.25, 0.5, 0.75, 1.0)  # of a run's budget: dense early, where curves move
STORE = ROOT / "bench" / "default_curves.json"
SECTION = "## Learning curves: the default's choice"
OnPoint = Callable[[list[dict], bool, bool], None]  # (the run's points so far, complete, fitted)


@dataclass(frozen=True)
class Run:
    """One curve, trained until its CPU-seconds pass `budget` (a fitted method: one pass). A schedule that
    spans the run (Dinomaly's cosine) needs its length in steps: the budget over `cpu_s_per_step`, measured
    on realdata (the first points of an earlier curve); other runs are only stopped by the budget."""

    overrides: list[str]
    budget: float = BUDGET_CPU_S
    cpu_s_per_step: float | None = None

    def planned_steps(self) -> int:
        return -1 if self.cpu_s_per_step is None else math.ceil(self.budget / self.cpu_s_per_step)


SHORT_DINOMALY = ["method=dinomaly", "method.scheduler.warmup_steps=5", "method.model.hm_warmup_steps=10"]
RUNS = {
    "patchcore-lite0": Run(["method=patchcore"]),
    "patchcore-lite1": Run(["method=patchcore", "backbone=effnet_lite1"]),
    "patchcore-lite2": Run(["method=patchcore", "backbone=effnet_lite2"]),
    "dinomaly-lite0": Run(SHORT_DINOMALY, cpu_s_per_step=2.2),
    "dinomaly-lite1": Run([*SHORT_DINOMALY, "backbone=effnet_lite1"], budget=600.0, cpu_s_per_step=3.3),
    "dualad_he-lite0": Run(["method=dualad_he"]),
    "uniad-lite0": Run(["method=uniad"], budget=600.0),
    "dualad_ho-lite0": Run(["method=dualad_ho"], budget=600.0),
    "featrec-lite0": Run(["method=featrec"], budget=600.0),
    "rd4ad-lite0": Run(["method=rd4ad"], budget=600.0),
    "vitad-lite0": Run(["method=vitad"], budget=600.0),
    "mambaad-lite0": Run(["method=mambaad"], budget=600.0),
    "inpformer-lite0": Run(
        ["method=inpformer", "method.scheduler.warmup_steps=5"], budget=600.0, cpu_s_per_step=2.2
    ),
}


def compose_run(overrides: list[str], output_dir: Path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.output_dir = str(output_dir)
    return cfg


@torch.no_grad()
def evaluate(module, datamodule, protocol) -> dict:
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
    """Evaluates when the training CPU-seconds pass each target (or once after a fit) and stops the run
    after the budget; the time spent evaluating is counted on neither clock."""

    def __init__(self, run: Run, datamodule, protocol, on_point: OnPoint) -> None:
        self.run, self.datamodule, self.protocol, self.on_point = run, datamodule, protocol, on_point
        self.targets = [f * run.budget for f in EVAL_FRACTIONS]
        self.points: list[dict] = []
        self.excluded_cpu = self.excluded_wall = 0.0
        self.start_cpu, self.start_wall = time.process_time(), time.monotonic()

    def cost(self) -> tuple[float, float]:
        return (
            time.process_time() - self.start_cpu - self.excluded_cpu,
            time.monotonic() - self.start_wall - self.excluded_wall,
        )

    def _point(self, module, step: int, final: bool) -> None:
        cpu, wall = self.cost()
        begin_cpu, begin_wall = time.process_time(), time.monotonic()
        metrics = evaluate(module, self.datamodule, self.protocol)
        self.excluded_cpu += time.process_time() - begin_cpu
        self.excluded_wall += time.monotonic() - begin_wall
        self.points.append({"step": step, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1), **metrics})
        self.on_point(self.points, final, module.fits_memory)
        print(
            f"  step {step}: {cpu:.0f} CPU-s {wall:.0f} wall-s "
            + " ".join(f"{m} {metrics[m]:.3f}" for m in CURVE_METRICS),
            flush=True,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.fits_memory or not self.targets:
            return
        cpu, _ = self.cost()
        if cpu < self.targets[0]:
            return
        while self.targets and cpu >= self.targets[0]:
            self.targets.pop(0)
        final = not self.targets
        self._point(pl_module, trainer.global_step, final)
        trainer.should_stop = trainer.should_stop or final

    def on_train_end(self, trainer, pl_module) -> None:
        # a fitted method, or a trained one whose schedule ran out before its budget
        if not self.points or self.points[-1]["step"] != trainer.global_step:
            self._point(pl_module, trainer.global_step, final=True)


def run_curve(run: Run, data_overrides: list[str], on_point: OnPoint) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*data_overrides, *run.overrides, "logger=none", "callbacks=none"]
        cfg = compose_run([*overrides, "dataset.num_workers=0"], Path(tmp))
        torch.manual_seed(cfg.seed)
        protocol = build_protocol(cfg)
        datamodule = build_datamodule(cfg, protocol)
        curve = CurvePoints(run, datamodule, protocol, on_point)  # the clocks start before the encoder
        module = build_module(cfg, build_net(cfg, build_encoder(cfg, protocol)))
        attach_feature_cache(cfg, datamodule, module)
        fit_once, trained = {"max_epochs": 1}, {"max_steps": run.planned_steps(), "max_epochs": -1}
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
            **(fit_once if module.fits_memory else trained),
        )
        trainer.fit(module, datamodule=datamodule)


def load() -> dict:
    return json.loads(STORE.read_text()) if STORE.is_file() else {}


def atomic_write(path: Path, text: str) -> None:
    """A reader (or a stop mid-write) sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save(key: str, run: Run, points: list[dict], complete: bool, fitted: bool) -> None:
    """Merge one run's points into the stored results (re-read: another invocation may have added runs
    meanwhile) and regenerate the outputs from the file."""
    entry = {
        "overrides": run.overrides,
        "budget": run.budget,
        "fitted": fitted,
        "complete": complete,
        "points": points,
    }
    atomic_write(STORE, json.dumps({**load(), key: entry}, indent=1) + "\n")
    render(load())


def render(results: dict) -> None:
    """The PNG and the results.md table, from the stored results alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({key.split("/")[0] for key in results})
    labels = sorted({key.split("/")[1] for key in results})
    fig, axes = plt.subplots(len(datasets), 3, figsize=(13, 3.6 * len(datasets)), squeeze=False)
    for row, data in enumerate(datasets):
        for col, metric in enumerate(CURVE_METRICS):
            ax = axes[row][col]
            for key, entry in results.items():
                if key.startswith(data + "/") and entry["points"]:
                    x, y = [p["cpu_s"] for p in entry["points"]], [p[metric] for p in entry["points"]]
                    label = key.split("/")[1]
                    color = f"C{labels.index(label) % 10}"  # one colour per run on every row
                    ax.plot(x, y, "s" if entry["fitted"] else "o-", color=color, label=label)
                    if entry["fitted"]:  # a fitted model does not change after its fit: its level, dashed
                        ax.axhline(y[-1], color=color, linestyle="--", linewidth=0.8)
            ax.axvline(BUDGET_CPU_S, color="grey", linestyle=":")
            ax.set(title=f"{data}: {metric}", xlabel="training CPU-seconds", xlim=(0, 1.1 * BUDGET_CPU_S))
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=8)
    fig.tight_layout()
    tmp = ROOT / "bench" / "default_curves.tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, ROOT / "bench" / "default_curves.png")

    lines = [
        SECTION,
        "",
        "`PYTHONPATH=src python bench/bench_default.py` (unified, seed 133, 1 torch thread, CPU). Cost: "
        "the process's training CPU-seconds (`time.process_time`, evaluations excluded); wall seconds are "
        "those of a 2-core machine shared with other engineers' jobs, so only the CPU-seconds compare. "
        "Budget: 1200 CPU-s (10 minutes on 2 cores). A run marked * was stopped before its budget (its "
        "points are kept). Curves: [default_curves.png](default_curves.png).",
        "",
        "| data | run | step | CPU-s | wall-s | I-AUROC | P-AUROC | AUPRO | lowest class I-AUROC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(results):
        data, label = key.split("/")
        entry = results[key]
        mark = "" if entry["complete"] else "*"
        for p in entry["points"]:
            low = min(p["per_class"].items(), key=lambda kv: kv[1]["I-AUROC"])
            values = " | ".join(f"{p[m]:.3f}" for m in CURVE_METRICS)
            step = "fit" if entry["fitted"] else p["step"]
            lines.append(
                f"| {data} | {label}{mark} | {step} | {p['cpu_s']:.0f} | {p['wall_s']:.0f} | {values} | "
                f"{low[0]} {low[1]['I-AUROC']:.3f} |"
            )
    path = ROOT / "bench" / "results.md"
    text = path.read_text()
    section = "\n".join(lines) + "\n"
    text, found = re.subn(rf"{re.escape(SECTION)}\n.*?(?=\n## |\Z)", lambda _: section, text, flags=re.S)
    atomic_write(path, text if found else text.rstrip("\n") + "\n\n" + section)  # in place, else appended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(RUNS), help="labels to (re)measure, in this order")
    parser.add_argument("--data", nargs="*", default=list(DATA), choices=list(DATA))
    parser.add_argument("--budget", type=float, help="CPU-s budget of the trained runs (default: each run's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: see the module docstring)")
    parser.add_argument("--render", action="store_true", help="only regenerate the PNG and table")
    args = parser.parse_args()
    if args.render:
        render(load())
        return
    torch.set_num_threads(args.threads)
    for data in args.data:
        for label in args.only or list(RUNS):
            run = replace(RUNS[label], budget=args.budget) if args.budget else RUNS[label]
            print(f"{data} / {label}", flush=True)
            run_curve(run, DATA[data], partial(save, f"{data}/{label}", run))


if __name__ == "__main__":
    main()
