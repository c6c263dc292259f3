"""Why do DualAD-He's early image scores rank upside down on some classes? Small experiments on the real set.

Trains DualAD-He (Lite0, the default config) on `../shared/realdata` (unified) and, at a few optimiser
steps, scores every test image by several rules from the same reconstruction:
- `product`: the official map, product over levels of each level's RMS error (the default);
- `sum` and `level<k>`: the sum over levels, and each level alone (is the product the culprit?);
and reports per class the image AUROC (avgpool_max, as the protocol) and the Spearman correlation of the
score with the image's mean grey level among the good images (is it brightness / background?). A second
run with `noise_scale=0` checks the pseudo-anomaly noise. Writes bench/dualad_inversion.tables.md.

    PYTHONPATH=src python bench/dualad_inversion.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_default import DATA, atomic_write, compose_run  # noqa: E402

from uad.builders import build_datamodule, build_encoder, build_module, build_net, build_protocol  # noqa: E402
from uad.metrics.functional import ranking_metrics  # noqa: E402

STEPS = [5, 10, 20, 40, 80]


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = x.argsort().argsort().double(), y.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


@torch.no_grad()
def score_rules(module, datamodule, protocol) -> dict[str, dict[str, tuple[float, ...]]]:
    """Per rule, per class: image AUROC, Spearman of the image score vs the mean grey level (good images),
    pixel AUROC, and Spearman of the pixel error vs the pixel's grey level (normal pixels, every 7th)."""
    module.eval()
    net = module.net
    rows: dict[str, dict[str, list]] = {}
    for batch in datamodule.test_dataloader():
        output = net(batch["image"])
        rec, target = output["reconstruction"], output["aligned"]
        levels = [
            (r - t).pow(2).mean(1, keepdim=True).sqrt()
            for r, t in zip(rec.split(list(net.levels), 1), target.split(list(net.levels), 1))
        ]  # per level (B, 1, h, w)
        maps = {"product": torch.cat(levels, 1).prod(1, keepdim=True), "sum": sum(levels)}
        maps |= {f"level{k}": m for k, m in enumerate(levels)}
        size = tuple(batch["image"].shape[-2:])
        grey = protocol.maps_for_eval(batch["image"].mean(1, keepdim=True))  # (B, h, w) at the metric size
        masks = protocol.masks_for_eval(batch["mask"])
        for rule, m in maps.items():
            m = protocol.maps_for_eval(F.interpolate(m, size=size, mode="bilinear", align_corners=True))
            scores = protocol.image_scores(m)
            for i, name in enumerate(batch["class_name"]):
                row = rows.setdefault(rule, {}).setdefault(name, [])
                row.append((float(scores[i]), int(batch["label"][i]), grey[i], m[i], masks[i]))
    module.train()
    table: dict[str, dict[str, tuple[float, ...]]] = {}
    for rule, per_class in rows.items():
        for name, entries in sorted(per_class.items()):
            scores, labels = torch.tensor([e[0] for e in entries]), torch.tensor([e[1] for e in entries])
            grey, maps, masks = (torch.stack([e[k] for e in entries]) for k in (2, 3, 4))
            good, normal = labels == 0, ~masks.flatten()
            table.setdefault(rule, {})[name] = (
                ranking_metrics(scores, labels, what="image")[0],
                spearman(scores[good], grey.mean((1, 2))[good]),
                ranking_metrics(maps, masks, what="pixel")[0],
                spearman(maps.flatten()[normal][::7], grey.flatten()[normal][::7]),
            )
    return table


class AtSteps(Callback):
    """Scores the rules at step 0 (the random decoder) and at each of `STEPS`; every table is handed to
    `on_table` at once, so a stopped run keeps the steps it finished."""

    def __init__(self, datamodule, protocol, on_table: Callable[[dict[int, dict]], None]) -> None:
        self.datamodule, self.protocol, self.on_table = datamodule, protocol, on_table
        self.tables: dict[int, dict] = {}
        self.start = time.process_time()
        self.excluded = 0.0

    def _take(self, module, step: int) -> None:
        begin = time.process_time()
        self.tables[step] = score_rules(module, self.datamodule, self.protocol)
        self.excluded += time.process_time() - begin
        self.on_table(self.tables)
        train_cpu = time.process_time() - self.start - self.excluded
        print(
            step,
            f"{train_cpu:.0f} training CPU-s",
            {r: {c: round(v[0], 2) for c, v in t.items()} for r, t in self.tables[step].items()},
            flush=True,
        )

    def on_train_start(self, trainer, pl_module) -> None:
        self._take(pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in STEPS:
            self._take(pl_module, trainer.global_step)


def run(extra: list[str], on_table: Callable[[dict[int, dict]], None]) -> dict[int, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run([*DATA["real"], "method=dualad_he", "dataset.num_workers=0", *extra], Path(tmp))
        torch.manual_seed(cfg.seed)
        protocol = build_protocol(cfg)
        datamodule = build_datamodule(cfg, protocol)
        module = build_module(cfg, build_net(cfg, build_encoder(cfg, protocol)))
        probe = AtSteps(datamodule, protocol, on_table)
        Trainer(
            accelerator="cpu",
            max_steps=max(STEPS),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            gradient_clip_val=cfg.method.grad_clip,
            callbacks=[probe],
        ).fit(module, datamodule=datamodule)
    return probe.tables


def table_lines(title: str, tables: dict[int, dict]) -> list[str]:
    classes = sorted(next(iter(tables[0].values())))
    lines = ["", f"## {title}", "", "| step | rule | " + " | ".join(classes) + " |"]
    lines.append("|---|---|" + "---|" * len(classes))
    for step, table in sorted(tables.items()):
        for rule, per_class in table.items():
            cells = " | ".join("{:.2f} / {:+.2f}; {:.2f} / {:+.2f}".format(*per_class[c]) for c in classes)
            lines.append(f"| {step} | {rule} | {cells} |")
    return lines


HEADER = [
    "# DualAD-He's early image scores, rule by rule (`PYTHONPATH=src python bench/dualad_inversion.py`)",
    "",
    "Real set (`../shared/realdata`, unified, Lite0, default DualAD-He config, seed 133, 1 torch thread). "
    "Each cell: image AUROC / Spearman correlation of the image score with the mean grey level of the good "
    "test images; pixel AUROC / Spearman correlation of the pixel error with the pixel's grey level over the "
    "normal pixels (every 7th).",
]
RUNS = (("noise_scale 3.2 (default)", []), ("noise_scale 0", ["method.model.noise_scale=0"]))


def write(finished: list[str], title: str, tables: dict[int, dict]) -> None:
    atomic_write(
        ROOT / "bench" / "dualad_inversion.tables.md",
        "\n".join([*HEADER, *finished, *table_lines(title, tables)]) + "\n",
    )


def main() -> None:
    """Writes the tables to bench/dualad_inversion.tables.md after every evaluation (the reading in
    bench/dualad_inversion.md is written by hand from them)."""
    torch.set_num_threads(1)  # one thread: CPU-seconds measure the work on a shared machine (bench_default)
    finished: list[str] = []
    for title, extra in RUNS:
        tables = run(extra, partial(write, list(finished), title))
        finished += table_lines(title, tables)


if __name__ == "__main__":
    main()
