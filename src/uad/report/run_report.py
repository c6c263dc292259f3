"""`report.html` of a training or evaluation run, built only from files in the run folder: results.json,
predictions.csv, report_data.npz (uad.report.evidence), config_resolved.yaml and status.json. A
class-separated run keeps each class's files under classes/<class>/; they are read from there.

Per class: the image-score histograms of normal and anomalous images with the threshold (the calibrated
one, else the F1-max threshold of the test scores, said so) and the false alarms and misses at it; image
ROC and PR curves with the threshold's operating point; the PRO curve up to the protocol's FPR limit; a
gallery of the highest-scoring normal and lowest-scoring defective images on one colour scale per class.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from uad.report import html
from uad.report.evidence import gallery_items, load_evidence
from uad.report.plots import (
    colour_bar_png,
    curve_png,
    histogram_png,
    operating_point,
    pr_points,
    roc_points,
    tile_png,
)
from uad.utils.io import write_text

REPORT_FILE = "report.html"


@dataclass
class ClassView:
    """What the page (and W&B) shows of one class."""

    name: str
    scores: np.ndarray
    labels: np.ndarray
    threshold: float | None
    threshold_label: str
    counts: dict[str, int] = field(default_factory=dict)
    plots: dict[str, bytes] = field(default_factory=dict)  # histogram, roc, pr, pro -> PNG
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    tiles: list[dict[str, Any]] = field(default_factory=list)  # png, caption fields
    scale: tuple[float, float] | None = None


@dataclass
class RunReport:
    path: Path
    classes: list[ClassView]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _class_folders(run_dir: Path) -> list[Path]:
    """The run folder, then a class-separated run's per-class folders."""
    return [run_dir, *sorted(p for p in (run_dir / "classes").glob("*") if p.is_dir())]


def read_predictions(folders: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """class -> (scores, labels) from each folder's predictions.csv."""
    rows: dict[str, list[tuple[float, int]]] = {}
    for folder in folders:
        path = folder / "predictions.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                rows.setdefault(row["class"], []).append((float(row["score"]), int(row["label"])))
    return {c: (np.array([s for s, _ in r]), np.array([y for _, y in r])) for c, r in rows.items()}


def read_evidence(folders: list[Path]) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The PRO curves and scales of every folder's report_data.npz (merged), and their galleries."""
    arrays: dict[str, np.ndarray] = {}
    items: list[dict[str, Any]] = []
    for folder in folders:
        evidence = load_evidence(folder)
        if evidence is None:
            continue
        arrays.update({k: v for k, v in evidence.items() if not k.startswith("gallery/")})
        items += gallery_items(evidence)
    return arrays, items


def class_threshold(
    name: str, folders: list[Path], results: dict[str, Any], scores: np.ndarray, labels: np.ndarray
) -> tuple[float | None, str]:
    """The class's calibrated image threshold (its own folder's results first, in a separate run), else
    the F1-max threshold of its test scores, with a label saying which."""
    for source in [_read_json(f / "results.json") for f in folders[:0:-1]] + [results]:
        thresholds = (source.get("extra") or {}).get("thresholds")
        if thresholds and name in thresholds.get("image", {}).get("per_class", {}):
            rule = thresholds.get("rule", "")
            detail = f"quantile {thresholds['quantile']}" if rule == "quantile" else rule
            return float(thresholds["image"]["per_class"][name]), f"calibrated ({detail})"
    if labels.any() and not labels.all():
        import torch

        from uad.thresholds import f1max_threshold

        value = f1max_threshold(torch.from_numpy(scores), torch.from_numpy(labels), f"class '{name}'")
        return value, "F1-max on the test set (no calibrated threshold)"
    return None, "no threshold"


def _class_view(
    name: str,
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: tuple[float | None, str],
    evidence: dict[str, np.ndarray],
    gallery: list[dict[str, Any]],
    metrics: dict[str, Any],
) -> ClassView:
    view = ClassView(name, scores, labels, *threshold)
    t = view.threshold
    normal, anomalous = scores[labels == 0], scores[labels == 1]
    if t is not None:
        view.counts = operating_point(scores, labels, t)
    fp, fn = view.counts.get("fp"), view.counts.get("fn")
    at = f"at {t:.4g}: {fp} false alarms (FP), {fn} misses (FN)" if t is not None else "no threshold"
    view.plots["histogram"] = histogram_png(normal, anomalous, t, f"{name}: {at}", view.threshold_label)
    if normal.size and anomalous.size:
        roc, pr = roc_points(scores, labels), pr_points(scores, labels)
        view.curves["roc"], view.curves["pr"] = roc, pr
        c = view.counts
        roc_at = (c["fp"] / normal.size, c["tp"] / anomalous.size) if t is not None else None
        pr_at = (c["tp"] / anomalous.size, c["tp"] / max(c["tp"] + c["fp"], 1)) if t is not None else None
        view.plots["roc"] = curve_png(
            *roc, "FPR", "TPR", f"image ROC, AUROC {_pct(metrics.get('I-AUROC'))}", roc_at, diagonal=True
        )
        view.plots["pr"] = curve_png(
            *pr, "recall", "precision", f"image PR, AP {_pct(metrics.get('I-AP'))}", pr_at, step=True
        )
    if f"pro/{name}/fpr" in evidence:
        limit = float(evidence["fpr_limit"])
        pro = (evidence[f"pro/{name}/fpr"], evidence[f"pro/{name}/pro"])
        view.curves["pro"] = pro
        title = f"pixel PRO to FPR {limit:g}, AUPRO {_pct(metrics.get('AUPRO'))}"
        view.plots["pro"] = curve_png(*pro, "pixel FPR", "PRO", title, xlim=(0.0, limit))
    if f"scale/{name}" in evidence:
        view.scale = tuple(float(v) for v in evidence[f"scale/{name}"])
    for item in (i for i in gallery if str(i["class"]) == name):
        view.tiles.append(_tile(item, view))
    return view


def _tile(item: dict[str, Any], view: ClassView) -> dict[str, Any]:
    amap = item["map"].astype(np.float32)
    vmin, vmax = view.scale or (float(amap.min()), float(amap.max()))
    score, label, t = float(item["score"]), int(item["label"]), view.threshold
    flagged = t is not None and score > t
    wrong = t is not None and flagged != bool(label)
    verdict = "" if t is None else ("false alarm" if wrong and flagged else "miss" if wrong else "correct")
    return {
        "png": tile_png(item["image"], amap, item["mask"], vmin, vmax),
        "class": view.name,
        "kind": "normal" if label == 0 else f"defective ({item['defect']})",
        "score": score,
        "threshold": t,
        "verdict": verdict,
        "path": str(item["path"]),
        "wrong": wrong,
    }


def _pct(value: Any) -> str:
    return html.fmt_percent(value if isinstance(value, float) and math.isfinite(value) else None)


def _header(results: dict[str, Any], run_dir: Path) -> str:
    run = results.get("run", {})
    speed = run.get("throughput") or {}
    status = _read_json(run_dir / "status.json")
    date = status.get("started") or datetime.fromtimestamp(
        (run_dir / "results.json").stat().st_mtime, timezone.utc
    ).isoformat(timespec="seconds")

    def seconds(stage: str) -> str:
        if f"{stage}_seconds" not in speed:
            return "-"
        return f"{speed[f'{stage}_seconds']:.1f} s ({speed.get(f'{stage}_images_per_s', 0):.1f} images/s)"

    pairs = [
        ("method", run.get("method")),
        ("backbone", run.get("backbone")),
        ("dataset", f"{run.get('dataset')} ({run.get('setting')})"),
        ("protocol", results.get("protocol", {}).get("name", run.get("protocol"))),
        ("git commit", run.get("git_commit") or "unknown"),
        ("date", date),
        ("training", seconds("train")),
        ("test", seconds("test")),
        (
            "parameters",
            f"{run.get('trainable_params', '-')} trainable, {run.get('frozen_params', '-')} frozen",
        ),
        ("seed", run.get("seed")),
        ("machine", run.get("machine")),
    ]
    title = " / ".join(str(run.get(k)) for k in ("method", "backbone", "dataset") if run.get(k))
    return f"<h1>{html.escape(title or run_dir.name)}</h1>" + html.key_values(pairs)


def paper_figures(cfg: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The paper's figures a recipe names (`paper:` with `source`, `mean` and optionally `per_class`, in %
    as printed), or {} where there are none or the run is not the paper's pairing (its `method`, `backbone`
    and `dataset`, where the block names them: an override or a recipe extending another changes them)."""
    paper = cfg.get("paper")
    if not isinstance(paper, dict) or not paper.get("mean"):
        return {}
    if any(paper.get(key) not in (None, run.get(key)) for key in ("method", "backbone", "dataset")):
        return {}
    return paper


def metric_table(results: dict[str, Any], paper: dict[str, Any]) -> str:
    metrics = results["metrics"]
    per_paper = paper.get("per_class") or {}

    def cell(name: str, metric: str, value: Any) -> Any:
        text = html.fmt_percent(value)
        theirs = (per_paper.get(name) or {}).get(metric)
        if theirs is not None:
            text += f" (paper {theirs:g})"
        return (text, "" if value is None else 100 * value)

    rows = [[name, *(cell(name, k, m.get(k)) for k in metrics)] for name, m in results["per_class"].items()]
    rows += [[name, *(["failed"] * len(metrics))] for name in results.get("errors", {})]
    footer = [["mean", *(html.fmt_percent(results["mean"].get(k)) for k in metrics)]]
    classes = [""]
    if paper:
        footer.append([f"paper ({paper.get('source', '')})", *(paper["mean"].get(k, "-") for k in metrics)])
        classes.append("paper")
    return html.table(["class", *metrics], rows, footer, footer_classes=classes, table_id="metrics")


def _class_section(view: ClassView, results: dict[str, Any]) -> str:
    counts = results.get("counts", {}).get(view.name, {})
    plots = "".join(html.img(png, f"{view.name} {kind}", f"plot-{kind}") for kind, png in view.plots.items())
    missing = [k for k in ("histogram", "roc", "pr", "pro") if k not in view.plots]
    note = (
        f'<p class="note">Not drawn: {", ".join(missing)} (the class lacks normal or defective images or '
        "defect pixels, or the run predates report_data.npz).</p>"
        if missing
        else ""
    )
    tiles = "".join(
        html.gallery_tile(
            t["png"],
            f"{t['class']} {t['path']}",
            f"<b>{html.escape(t['kind'])}</b> · score {t['score']:.4g}"
            + (f" · threshold {t['threshold']:.4g} · {t['verdict']}" if t["threshold"] is not None else "")
            + f"<br><span class=note>{html.escape(html.short_path(t['path']))}</span>",
            t["wrong"],
        )
        for t in view.tiles
    )
    scale = ""
    if view.scale is not None:
        scale = (
            f'<p class="note">Left: image; right: anomaly map on the class\'s fixed colour scale '
            f"{view.scale[0]:.4g} .. {view.scale[1]:.4g} (1st to 99.9th percentile of its pixels); white: "
            "ground-truth contour. Highest-scoring normal images first, then lowest-scoring defective ones."
            "</p>" + html.img(colour_bar_png(*view.scale), f"{view.name} colour scale", "colour-bar")
        )
    gallery = (
        f'<div class="gallery">{tiles}</div>'
        if tiles
        else '<p class="note">No gallery saved for this run.</p>'
    )
    value = f" = {view.threshold:.6g}" if view.threshold is not None else ""
    defects = results.get("per_defect", {}).get(view.name, {})
    defect_table = html.table(
        ["defect", "images", "I-AUROC"],
        [[d, v.get("count"), html.fmt_percent(v.get("I-AUROC"))] for d, v in defects.items()],
    )
    return (
        f'<section class="class" id="class-{html.escape(view.name)}" data-class="{html.escape(view.name)}">'
        f"<h2>{html.escape(view.name)}</h2><p>{counts.get('good', '?')} normal and "
        f"{counts.get('defective', '?')} defective test images; threshold: "
        f"{html.escape(view.threshold_label)}{value}.</p>"
        + html.fold("Curves", f'<div class="plots">{plots}</div>{note}', open_=True)
        + html.fold("Gallery: false alarms and misses", scale + gallery, open_=True)
        + (html.fold("I-AUROC per defect type", defect_table) if defects else "")
        + "</section>"
    )


def build_run_report(run_dir: str | Path) -> RunReport:
    """Write `report.html` into a run folder (which must hold results.json); return what it shows."""
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"'{run_dir}' holds no results.json: pass a finished run's folder")
    results = json.loads(results_path.read_text())
    folders = _class_folders(run_dir)
    predictions = read_predictions(folders)
    evidence, gallery = read_evidence(folders)
    config_path = run_dir / "config_resolved.yaml"
    cfg = OmegaConf.to_container(OmegaConf.load(config_path)) if config_path.is_file() else {}
    views = []
    for name, (scores, labels) in predictions.items():
        threshold = class_threshold(name, folders, results, scores, labels)
        metrics = results["per_class"].get(name, {})
        views.append(_class_view(name, scores, labels, threshold, evidence, gallery, metrics))
    body = _header(results, run_dir)
    body += "<h2>Metrics (%)</h2>" + metric_table(results, paper_figures(cfg, results.get("run", {})))
    if results.get("errors"):
        body += "<h2>Failed classes</h2><ul>" + "".join(
            f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in results["errors"].items()
        )
        body += "</ul>"
    body += "".join(_class_section(v, results) for v in views)
    body += html.fold("Resolved config", f"<pre>{html.escape(OmegaConf.to_yaml(cfg))}</pre>")
    body += html.fold("Protocol and versions", html.key_values(_details(results)))
    title = f"uad report: {run_dir.name}"
    path = write_text(run_dir / REPORT_FILE, html.page(title, body))
    return RunReport(path, views)


def _details(results: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs = [(f"protocol.{k}", v) for k, v in results.get("protocol", {}).items()]
    return pairs + [(f"versions.{k}", v) for k, v in results.get("run", {}).get("versions", {}).items()]
