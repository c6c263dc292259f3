"""`report.html` of a `mode=predict` folder, from its predictions.csv and report_data.npz: the highest-
scoring images as a gallery sorted by score, each with its decision and threshold, and per class a
histogram of the scores against the class's threshold; unreadable images listed with their reason."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uad.report import html
from uad.report.evidence import gallery_items, load_evidence
from uad.report.plots import histogram_png, tile_png
from uad.utils.io import write_text

REPORT_FILE = "report.html"


@dataclass
class PredictClass:
    """One class of the batch, shaped as the run report's classes for W&B."""

    name: str
    plots: dict[str, bytes] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    tiles: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PredictReport:
    path: Path
    classes: list[PredictClass]


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def build_predict_report(output_dir: str | Path) -> PredictReport:
    output_dir = Path(output_dir)
    with (output_dir / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    scored = [r for r in rows if not r.get("error")]
    failed = [r for r in rows if r.get("error")]
    classes: dict[str, PredictClass] = {}
    sections = []
    for name in dict.fromkeys(r["class"] for r in scored):
        mine = [r for r in scored if r["class"] == name]
        scores = np.array([float(r["score"]) for r in mine])
        thresholds = {t for t in (_number(r.get("threshold")) for r in mine) if t is not None}
        threshold = thresholds.pop() if len(thresholds) == 1 else None
        flagged = sum(r.get("decision") == "anomalous" for r in mine)
        view = classes[name] = PredictClass(name)
        title = f"{name}: {flagged} of {len(mine)} anomalous" + (
            f" at threshold {threshold:.4g}" if threshold is not None else ""
        )
        judged = np.array([r.get("decision") == "anomalous" for r in mine], dtype=bool)
        view.plots["histogram"] = histogram_png(
            scores[~judged],
            scores[judged],
            threshold,
            title,
            "threshold",
            ("judged normal", "judged anomalous"),
        )
        sections.append(html.img(view.plots["histogram"], f"{name} histogram", "plot-histogram"))
    tiles = []
    for item in gallery_items(load_evidence(output_dir)):
        threshold = float(item["threshold"])
        pixel = float(item["pixel_threshold"])
        amap = item["map"].astype(np.float32)
        vmin, vmax = (
            (0.0, 2 * pixel) if math.isfinite(pixel) and pixel > 0 else (float(amap.min()), float(amap.max()))
        )
        tile = {
            "png": tile_png(item["image"], amap, item["mask"], vmin, vmax),
            "kind": str(item["decision"]) or "no threshold",
            "score": float(item["score"]),
            "threshold": threshold if math.isfinite(threshold) else None,
            "verdict": str(item["decision"]),
            "path": str(item["path"]),
        }
        classes.setdefault(str(item["class"]), PredictClass(str(item["class"]))).tiles.append(tile)
        caption = (
            f"<b>{html.escape(tile['kind'])}</b> · {html.escape(str(item['class']))}"
            + f" · score {tile['score']:.4g}"
            + (f" · threshold {tile['threshold']:.4g}" if tile["threshold"] is not None else "")
            + f"<br><span class=note>{html.escape(html.short_path(tile['path']))}</span>"
        )
        tiles.append(html.gallery_tile(tile["png"], tile["path"], caption, tile["verdict"] == "anomalous"))
    anomalous = sum(r.get("decision") == "anomalous" for r in scored)
    body = (
        f"<h1>uad predictions: {html.escape(output_dir.name)}</h1>"
        f"<p>{len(scored)} images scored, {anomalous} anomalous, {len(failed)} unreadable. A picture is "
        "anomalous when its score is above its class's threshold.</p>"
        + "<h2>Scores against the threshold</h2>"
        + f'<div class="plots">{"".join(sections)}</div>'
        + f"<h2>Highest-scoring images ({len(tiles)} of {len(scored)}), by score</h2>"
        + '<p class="note">Left: image; right: anomaly map (colour scale 0 .. 2 x the pixel threshold, so '
        "the threshold is mid-scale); white: the predicted defect contour. Red frame: anomalous.</p>"
        + f'<div class="gallery">{"".join(tiles)}</div>'
    )
    table_rows = [
        [
            r["path"],
            r["class"],
            (f"{float(r['score']):.4g}", r["score"]),
            r.get("threshold", ""),
            r["decision"],
        ]
        for r in sorted(scored, key=lambda r: -float(r["score"]))
    ]
    body += html.fold(
        "All predictions", html.table(["path", "class", "score", "threshold", "decision"], table_rows)
    )
    if failed:
        body += "<h2>Unreadable images</h2><ul>" + "".join(
            f"<li>{html.escape(r['path'])}: {html.escape(r['error'])}</li>" for r in failed
        )
        body += "</ul>"
    path = write_text(output_dir / REPORT_FILE, html.page(f"uad predictions: {output_dir.name}", body))
    return PredictReport(path, list(classes.values()))
