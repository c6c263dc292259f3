"""The report's plots in W&B, when the run logs there (`logger=wandb`, online or offline): per class the
score histogram, ROC, PR and PRO curves as images, ROC and PR as W&B line plots, and the gallery as
images and as a `wandb.Table` with them. Nothing happens without an active W&B run (`wandb.run`)."""

from __future__ import annotations

import io
import sys
from typing import Any

from PIL import Image

from uad.report.predict_report import PredictReport
from uad.report.run_report import RunReport


def _image(wandb: Any, png: bytes, caption: str) -> Any:
    return wandb.Image(Image.open(io.BytesIO(png)).convert("RGB"), caption=caption)


def log_report(report: RunReport | PredictReport, run: Any = None) -> bool:
    """Log a report's plots and gallery to `run` (default: the active W&B run); False when there is
    none (wandb not imported by the run, or no run started)."""
    wandb = sys.modules.get("wandb")
    run = run if run is not None else getattr(wandb, "run", None)
    if wandb is None or run is None:
        return False
    payload: dict[str, Any] = {}
    rows = []
    for view in report.classes:
        for kind, png in view.plots.items():
            payload[f"report/{view.name}/{kind}"] = _image(wandb, png, f"{view.name} {kind}")
        for kind, (x, y) in view.curves.items():
            if kind in ("roc", "pr"):
                table = wandb.Table(columns=["x", "y"], data=[[float(a), float(b)] for a, b in zip(x, y)])
                axes = ("FPR", "TPR") if kind == "roc" else ("recall", "precision")
                payload[f"report/{view.name}/{kind}_curve"] = wandb.plot.line(
                    table, "x", "y", title=f"{view.name} {kind.upper()} ({axes[0]} vs {axes[1]})"
                )
        images = [_image(wandb, t["png"], f"{t['kind']} {t['score']:.4g} {t['verdict']}") for t in view.tiles]
        if images:  # also as an image list: shown as a strip in the run's media panel
            payload[f"report/{view.name}/gallery"] = images
        for tile, image in zip(view.tiles, images):
            rows.append(
                [
                    view.name,
                    tile["kind"],
                    image,
                    tile["score"],
                    tile["threshold"],
                    tile["verdict"],
                    tile["path"],
                ]
            )
    if rows:
        columns = ["class", "kind", "image | anomaly map", "score", "threshold", "verdict", "path"]
        payload["report/gallery"] = wandb.Table(columns=columns, data=rows)
    run.log(payload)
    return True
