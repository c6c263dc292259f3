"""`leaderboard.html` of a sweep folder: the heat map, a sortable table of runs x mean metrics with a link to
each run's report.html, and the failed jobs with their one-line reason. Built by `uad.leaderboard` beside
its CSV, Markdown and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from uad.metrics.functional import METRIC_NAMES
from uad.report import html

if TYPE_CHECKING:  # uad.leaderboard imports this module
    from uad.leaderboard import RunRecord


def leaderboard_page(runs: list[RunRecord], sweep_dir: Path, heatmap: Path | None) -> str:
    """The page of a sweep's runs; links are relative, so the folder can move."""
    finished = [r for r in runs if r.status == "finished"]
    others = [r for r in runs if r.status != "finished"]
    rows = []
    for run in finished:
        report = run.path / "report.html"
        link = (
            f'<a href="{html.escape(Path(run.name, "report.html").as_posix())}">{html.escape(run.name)}</a>'
        )
        rows.append(
            [
                html.Raw(link) if report.is_file() else run.name,
                *(str(run.identity.get(k) or "") for k in ("method", "backbone", "dataset")),
                run.overrides_text,
                *((html.fmt_percent(run.mean.get(k)), _sort_value(run.mean.get(k))) for k in METRIC_NAMES),
            ]
        )
    columns = ["run", "method", "backbone", "dataset", "overrides", *METRIC_NAMES]
    body = (
        f"<h1>Leaderboard: {html.escape(sweep_dir.name)}</h1>"
        f"<p>{len(finished)} finished, {sum(r.status == 'failed' for r in runs)} failed, "
        f"{sum(r.status not in ('finished', 'failed') for r in runs)} other. Mean over classes, in %; click "
        "a header to sort, a run to open its report.</p>"
    )
    if heatmap is not None and heatmap.is_file():
        body += "<h2>Heat map</h2>" + html.img(
            heatmap.read_bytes(), "heat map of the runs x classes", "heatmap"
        )
    body += "<h2>Runs</h2>" + html.table(columns, rows, table_id="runs")
    if others:
        body += "<h2>Runs without results</h2><ul>" + "".join(
            f'<li data-kind="failed-run"><b>{html.escape(r.name)}</b> ({html.escape(r.status)}): '
            f"{html.escape(r.error or 'no error recorded')}</li>"
            for r in others
        )
        body += "</ul>"
    return html.page(f"uad leaderboard: {sweep_dir.name}", body, fold_buttons=False)


def _sort_value(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.6f}"
