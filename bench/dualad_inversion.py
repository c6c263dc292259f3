"""Why do DualAD-He's early image scores rank upside down on some classes? Small experiments on the real set.

Trains DualAD-He (Lite0, the default config) on `../shared/realdata` (unified) and, at a few optimiser
steps, scores every test image by several rules from the same reconstruction:
- `product`: the official map, product over levels of each level's RMS error (the default);
- `sum` and `level<k>`: the sum over levels, and each level alone (is the product the culprit?);
and reports per class the image AUROC (avgpool_max, as the protocol) and the Spearman correlation of the
score with the image's mean grey level among the good images (is it brightness / background?). A second
run with `noise_scale=0` checks the pseudo-anomaly noise. Writes bench/dualad_inversion.md.

    PYTHONPATH=src python bench/dualad_inversion.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_default import DATA, compose_run  # noqa: E402

from uad.builders import build_datamodule, build_encoder, build_module, build_net, build_protocol  # noqa: E402
from uad.metrics.functional import ranking_metrics  # noqa: E402

STEPS = [0, 5, 9, 18]


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = x.argsort().argsort().double(), y.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


@torch.no_grad()
def score_rules(module, datamodule, protocol) -> dict[str, dict[str, tuple[float, float]]]:
    """Per rule, per class: (image AUROC, Spearman of score vs mean grey level on good images)."""
    module.eval()
    net = module.net
    rows: dict[str, list] = {}
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
        for rule, m in maps.items():
            m = torch.nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=True)
            scores = protocol.image_scores(protocol.maps_for_eval(m))
            for i, name in enumerate(batch["class_name"]):
                grey = float(batch["image"][i].mean())
                rows.setdefault(rule, []).append((name, float(scores[i]), int(batch["label"][i]), grey))
    module.train()
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for rule, entries in rows.items():
        for name in sorted({e[0] for e in entries}):
            mine = [e for e in entries if e[0] == name]
            scores = torch.tensor([e[1] for e in mine])
            labels = torch.tensor([e[2] for e in mine])
            auroc = ranking_metrics(scores, labels, what="image")[0]
            good = labels == 0
            rho = spearman(scores[good], torch.tensor([e[3] for e in mine])[good])
            table.setdefault(rule, {})[name] = (auroc, rho)
    return table


class AtSteps(Callback):
    def __init__(self, datamodule, protocol) -> None:
        self.datamodule, self.protocol = datamodule, protocol
        self.tables: dict[int, dict] = {}

    def _take(self, module, step: int) -> None:
        self.tables[step] = score_rules(module, self.datamodule, self.protocol)
        print(step, {r: {c: round(v[0], 2) for c, v in t.items()} for r, t in self.tables[step].items()})

    def on_train_start(self, trainer, pl_module) -> None:
        self._take(pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in STEPS:
            self._take(pl_module, trainer.global_step)


def run(extra: list[str]) -> dict[int, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run([*DATA["real"], "method=dualad_he", "dataset.num_workers=0", *extra], Path(tmp))
        torch.manual_seed(cfg.seed)
        protocol = build_protocol(cfg)
        datamodule = build_datamodule(cfg, protocol)
        module = build_module(cfg, build_net(cfg, build_encoder(cfg, protocol)))
        probe = AtSteps(datamodule, protocol)
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


def main() -> None:
    torch.set_num_threads(2)
    start = time.process_time()
    lines = [
        "# DualAD-He's early image scores, rule by rule (`PYTHONPATH=src python bench/dualad_inversion.py`)",
        "",
        "Real set (`../shared/realdata`, unified, Lite0, default DualAD-He config, seed 133). Each cell: "
        "image AUROC / Spearman correlation of the score with the mean grey level of the good test images.",
    ]
    runs = (("noise_scale 3.2 (default)", []), ("noise_scale 0", ["method.model.noise_scale=0"]))
    for title, extra in runs:
        tables = run(extra)
        classes = sorted(next(iter(tables[0].values())))
        lines += ["", f"## {title}", "", "| step | rule | " + " | ".join(classes) + " |"]
        lines.append("|---|---|" + "---|" * len(classes))
        for step, table in sorted(tables.items()):
            for rule, per_class in table.items():
                cells = " | ".join(f"{per_class[c][0]:.2f} / {per_class[c][1]:+.2f}" for c in classes)
                lines.append(f"| {step} | {rule} | {cells} |")
    lines += ["", f"Total: {time.process_time() - start:.0f} CPU-seconds."]
    (ROOT / "bench" / "dualad_inversion.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
