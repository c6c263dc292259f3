"""Whole pages from files only (uad.report): a run's report.html from what the Evaluator writes, a sweep's
leaderboard.html, a mode=predict report, W&B logging through a fake run, and the command line."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from tests.helpers.report_dom import network_urls, parse
from uad import leaderboard
from uad.callbacks.evaluation import Evaluator
from uad.data.transforms import InputTransform
from uad.metrics.protocol import EvalProtocol
from uad.metrics.records import EvalRecords
from uad.predict import CSV_COLUMNS, Prediction
from uad.report import write_report
from uad.report.__main__ import main
from uad.report.evidence import EVIDENCE_FILE, PredictGallery, record_evaluation
from uad.report.run_report import build_run_report, paper_figures
from uad.report.wandb_log import log_report
from uad.results import Results
from uad.runstatus import RunStatus

PLOTS = {"plot-histogram": 1, "plot-roc": 1, "plot-pr": 1, "plot-pro": 1}


def _records(counts: dict[str, tuple[int, int]], size: int = 24) -> EvalRecords:
    """Per class (normal, defective) images: defective ones with a square defect the map sees."""
    gen = torch.Generator().manual_seed(0)
    rows = [(c, y) for c, (n, d) in counts.items() for y in [0] * n + [1] * d]
    masks = torch.zeros(len(rows), size, size, dtype=torch.bool)
    for i, (_, y) in enumerate(rows):
        if y:
            masks[i, 4 + i % 8 : 10 + i % 8, 6:12] = True
    maps = torch.rand(len(rows), size, size, generator=gen) + 0.5 * masks
    return EvalRecords(
        torch.arange(len(rows)),
        maps.amax((1, 2)),
        torch.tensor([y for _, y in rows]),
        maps,
        masks,
        [c for c, _ in rows],
        ["good" if not y else "scratch" for _, y in rows],
        [f"/data/{c}/{i:03d}.png" for i, (c, _) in enumerate(rows)],
        [""] * len(rows),
    )


def _evaluated_run(folder: Path, counts: dict[str, tuple[int, int]]) -> EvalRecords:
    records = _records(counts)
    protocol = EvalProtocol(InputTransform(24))
    results = Evaluator(protocol, folder, {"method": "featrec", "backbone": "lite0"}).evaluate(records)
    results.extra["thresholds"] = {
        "rule": "quantile",
        "quantile": 0.99,
        "image": {"global": 1.2, "per_class": dict.fromkeys(counts, 1.2)},
    }
    results.write(folder)
    record_evaluation(folder, records, 0.3, trainer=None)
    return records


def test_run_report_shows_every_class_with_plots_gallery_and_table(tmp_path):
    _evaluated_run(tmp_path, {"bottle": (5, 6), "grid": (2, 3)})
    (tmp_path / "config_resolved.yaml").write_text(
        "method:\n  name: featrec\npaper:\n  source: Some et al. 2024\n  mean: {I-AUROC: 97.1}\n"
    )
    report = build_run_report(tmp_path)
    text = report.path.read_text()
    dom = parse(text)
    assert set(dom.sections) == {"bottle", "grid"}
    assert {k: v for k, v in dom.sections["bottle"].items() if k.startswith("plot")} == PLOTS
    assert dom.sections["bottle"]["gallery"] == 4 + 4 and dom.sections["grid"]["gallery"] == 2 + 3
    assert dom.first_column["metrics"] == ["bottle", "grid"] and dom.sortable_tables >= 1
    assert "default-src 'none'" in dom.csp and network_urls(text) == []
    assert all(s.startswith("data:image/png;base64,") for s in dom.sources)
    assert "paper (Some et al. 2024)" in text and "97.1" in text and "Resolved config" in text
    bottle = next(v for v in report.classes if v.name == "bottle")
    scores, labels = bottle.scores, bottle.labels
    assert bottle.threshold == 1.2 and bottle.threshold_label.startswith("calibrated")
    assert bottle.counts["fp"] == int(((scores > 1.2) & (labels == 0)).sum())
    assert bottle.counts["fn"] == int(((scores <= 1.2) & (labels == 1)).sum())
    assert [t["score"] for t in bottle.tiles[:4]] == sorted(scores[labels == 0], reverse=True)[:4]


def test_paper_figures_only_beside_the_papers_own_pairing():
    paper = {"source": "X", "backbone": "wres50", "dataset": "mvtec", "mean": {"I-AUROC": 99.0}}
    assert paper_figures({"paper": paper}, {"backbone": "wres50", "dataset": "mvtec"}) == paper
    assert paper_figures({"paper": paper}, {"backbone": "res34", "dataset": "mvtec"}) == {}
    assert paper_figures({"paper": paper}, {"backbone": "wres50", "dataset": "visa"}) == {}
    assert paper_figures({}, {"backbone": "wres50"}) == {}


def test_an_older_run_without_report_data_gets_curves_and_says_what_is_missing(tmp_path):
    _evaluated_run(tmp_path, {"bottle": (3, 4)})
    (tmp_path / EVIDENCE_FILE).unlink()
    results = json.loads((tmp_path / "results.json").read_text())
    results["extra"].pop("thresholds")
    Results.from_json(results).write(tmp_path)
    assert main([str(tmp_path)]) == 0
    dom = parse((tmp_path / "report.html").read_text())
    assert dom.sections["bottle"] == {"plot-histogram": 1, "plot-roc": 1, "plot-pr": 1}
    text = (tmp_path / "report.html").read_text()
    assert "Not drawn: pro" in text and "F1-max on the test set" in text


def test_leaderboard_page_links_reports_sorts_runs_and_names_failures(tmp_path):
    for name, counts in (("0", {"a": (3, 3)}), ("1", {"a": (3, 3), "b": (2, 2)})):
        _evaluated_run(tmp_path / name, counts)
        build_run_report(tmp_path / name)
    RunStatus(tmp_path / "2").failed(RuntimeError("CUDA out of memory"))
    board = leaderboard.build_leaderboard(tmp_path)
    text = board["paths"]["html"].read_text()
    dom = parse(text)
    assert sorted(dom.links) == ["0/report.html", "1/report.html"]
    assert dom.images == {"heatmap": 1} and dom.first_column["runs"] == ["0", "1"]
    assert "RuntimeError: CUDA out of memory" in text and network_urls(text) == []


def test_predict_report_sorts_the_gallery_by_score_and_logs_to_a_wandb_run(tmp_path):
    gallery, rows = PredictGallery(limit=3), []
    for i, score in enumerate([0.2, 0.9, 0.5, 0.7, 0.1]):
        decision = "anomalous" if score > 0.4 else "normal"
        amap = np.full((16, 16), score, np.float32)
        p = Prediction(score, decision, amap, "bottle", 0.4, None, 0.5, f"/new/{i}.png")
        gallery.add(p, torch.zeros(3, 16, 16))
        rows.append(
            {"path": p.path, "class": "bottle", "score": score, "threshold": 0.4, "decision": decision}
        )
    rows.append({"path": "/new/broken.png", "class": "", "error": "truncated file"})
    gallery.save(tmp_path)
    with (tmp_path / "predictions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    assert write_report(tmp_path, "predict") == tmp_path / "report.html"
    text = (tmp_path / "report.html").read_text()
    dom = parse(text)
    assert dom.images == {"plot-histogram": 1, "gallery": 3}
    assert text.index("score 0.9") < text.index("score 0.7") < text.index("score 0.5")
    assert "score 0.2" not in text.split("All predictions")[0] and "truncated file" in text

    import wandb  # noqa: F401  (log_report logs only where the run imported wandb)

    from uad.report.predict_report import build_predict_report

    logged = []
    fake_run = SimpleNamespace(log=logged.append)
    assert log_report(build_predict_report(tmp_path), run=fake_run)
    (payload,) = logged
    assert "report/bottle/histogram" in payload and len(payload["report/gallery"].data) == 3


def test_run_report_goes_to_wandb_as_images_curves_and_a_gallery_table(tmp_path):
    import wandb

    _evaluated_run(tmp_path, {"bottle": (3, 4)})
    logged = []
    assert log_report(build_run_report(tmp_path), run=SimpleNamespace(log=logged.append))
    (payload,) = logged
    for kind in ("histogram", "roc", "pr", "pro"):
        assert isinstance(payload[f"report/bottle/{kind}"], wandb.Image)
    assert {"report/bottle/roc_curve", "report/bottle/pr_curve"} <= set(payload)
    table = payload["report/gallery"]
    assert len(table.data) == 3 + 4 and isinstance(table.data[0][2], wandb.Image)
    assert len(payload["report/bottle/gallery"]) == 3 + 4
    assert log_report(build_run_report(tmp_path)) is ("wandb" in sys.modules and wandb.run is not None)


def test_command_line_refuses_a_missing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    assert "is not a folder" in capsys.readouterr().err
