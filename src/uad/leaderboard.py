"""One leaderboard for a sweep folder: every finished run's `results.json` side by side, failed runs named
with their error. Built at the end of every multirun (the Hydra callback below) and at any time with

    python -m uad.leaderboard outputs/multiruns/<date>_<time>

Writes into the sweep folder (atomically): `leaderboard.csv` (one row per run and class, `mean` included),
`leaderboard.md` (mean metrics per run, best I-AUROC first, then the failed runs), `leaderboard.png`
(heat maps of I-AUROC, P-AUROC and AUPRO per run and class) and `leaderboard.html` (the heat map, a sortable
table linking each run's report.html, the failed runs with their reason; uad.report).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from uad.loggers import log_leaderboard
from uad.metrics.functional import METRIC_NAMES
from uad.report.leaderboard_page import leaderboard_page
from uad.runstatus import ERROR_FILE, STATUS_FILE, read_status, run_state
from uad.utils.io import atomic_write, write_text
from uad.utils.logging import get_logger

log = get_logger(__name__)
HEATMAP_METRICS = ("I-AUROC", "P-AUROC", "AUPRO")
IDENTITY = ("method", "backbone", "dataset", "setting", "protocol")


@dataclass
class RunRecord:
    """One run folder of a sweep, finished or not."""

    path: Path
    name: str
    status: str
    identity: dict[str, Any]
    overrides: list[str]
    per_class: dict[str, dict[str, float | None]] = field(default_factory=dict)
    mean: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None

    @property
    def overrides_text(self) -> str:
        return " ".join(self.overrides)


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Run folders under `sweep_dir`, outermost only (a separate-setting run keeps per-class runs inside)."""
    found: list[Path] = []
    for candidate in sorted(
        {p.parent for name in ("results.json", STATUS_FILE) for p in sweep_dir.rglob(name)}
    ):
        if not any(parent in found for parent in candidate.parents):
            found.append(candidate)
    return found


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def _identity_from_config(run_dir: Path) -> dict[str, Any]:
    """Method, backbone, ... of a run that wrote no results (it failed before), from its resolved config."""
    path = run_dir / "config_resolved.yaml"
    if not path.is_file():
        return {}
    cfg = OmegaConf.load(path)
    identity = {key: OmegaConf.select(cfg, f"{key}.name") for key in IDENTITY if key != "setting"}
    return identity | {"setting": OmegaConf.select(cfg, "dataset.setting")}


def read_run(run_dir: Path, sweep_dir: Path) -> RunRecord:
    status = read_status(run_dir) or {}
    results_path, results, unreadable = run_dir / "results.json", None, None
    try:
        results = json.loads(results_path.read_text()) if results_path.is_file() else None
    except (OSError, json.JSONDecodeError) as err:  # not ours (writes are atomic): name it, go on
        unreadable = f"unreadable results.json: {err}"
    recorded = run_state(status) if status else None  # "died": marked running, but its process is gone
    state = "unreadable" if unreadable else recorded or ("finished" if results else "unknown")
    if results is not None:
        identity = {key: results.get("run", {}).get(key) for key in IDENTITY}
        identity["protocol"] = results.get("protocol", {}).get("name", identity["protocol"])
    else:
        identity = _identity_from_config(run_dir)
    error = unreadable or status.get("error")
    if state == "failed" and not error and (run_dir / ERROR_FILE).is_file():
        error = (run_dir / ERROR_FILE).read_text().strip().splitlines()[-1]
    return RunRecord(
        path=run_dir,
        name=str(run_dir.relative_to(sweep_dir)) if run_dir != sweep_dir else run_dir.name,
        status=state,
        identity=identity,
        overrides=_overrides(run_dir),
        per_class=(results or {}).get("per_class", {}) if state == "finished" else {},
        mean=(results or {}).get("mean", {}) if state == "finished" else {},
        error=error,
    )


def collect(sweep_dir: str | Path) -> list[RunRecord]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder '{sweep_dir}' does not exist: pass the folder of a multirun")
    runs = [read_run(run_dir, sweep_dir) for run_dir in find_run_dirs(sweep_dir)]
    shared = set.intersection(*(set(r.overrides) for r in runs)) if len(runs) > 1 else set()
    for run in runs:  # keep what tells the runs apart (the swept values), not what they all share
        run.overrides = [o for o in run.overrides if o not in shared]
    return runs


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _sort_key(run: RunRecord) -> tuple[float, str]:
    value = run.mean.get("I-AUROC")
    return (-(value if value is not None else -1.0), run.name)


def to_csv(runs: list[RunRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "status", *IDENTITY, "overrides", "class", *METRIC_NAMES, "error"])
    for run in runs:
        head = [run.name, run.status, *(run.identity.get(k) or "" for k in IDENTITY), run.overrides_text]
        rows = [*run.per_class.items(), ("mean", run.mean)] if run.status == "finished" else [("", {})]
        for name, metrics in rows:
            values = ["" if metrics.get(k) is None else repr(metrics[k]) for k in METRIC_NAMES]
            writer.writerow([*head, name, *values, run.error or ""])
    return buffer.getvalue()


def to_markdown(runs: list[RunRecord], sweep_dir: Path) -> str:
    finished = sorted((r for r in runs if r.status == "finished"), key=_sort_key)
    others = [r for r in runs if r.status != "finished"]
    header = ["run", "method", "backbone", "dataset", "overrides", *METRIC_NAMES]
    out = [
        f"# Leaderboard: {sweep_dir.name}",
        "",
        f"{len(finished)} finished, {sum(r.status == 'failed' for r in runs)} failed, "
        f"{sum(r.status not in ('finished', 'failed') for r in runs)} other. Mean over classes, in %; "
        "best I-AUROC first.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for run in finished:
        cells = [run.name, *(str(run.identity.get(k) or "") for k in ("method", "backbone", "dataset"))]
        cells += [
            f"`{run.overrides_text}`" if run.overrides else "",
            *(_fmt(run.mean.get(k)) for k in METRIC_NAMES),
        ]
        out.append("| " + " | ".join(cells) + " |")
    if others:
        out += ["", "## Runs without results", ""]
        out += [f"- `{r.name}` ({r.status}): {r.error or _no_error(r.status)}" for r in others]
    return "\n".join(out) + "\n"


def _no_error(status: str) -> str:
    return {
        "running": "still running (its heartbeat is fresh)",
        "died": "its process is gone without an end (killed, or the machine went down)",
    }.get(status, "no error recorded")


def _heat_table(runs: list[RunRecord], metric: str) -> tuple[list[str], list[list[float]]]:
    classes = list(dict.fromkeys(c for r in runs for c in r.per_class))
    columns = [*classes, "mean"]
    table = []
    for run in runs:
        row = [*(run.per_class.get(c, {}).get(metric) for c in classes), run.mean.get(metric)]
        table.append([math.nan if v is None else 100 * v for v in row])
    return columns, table


def write_heatmap(runs: list[RunRecord], path: Path) -> Path | None:
    """Heat maps (one per metric) of the finished runs x classes; None when there is nothing to draw."""
    finished = sorted((r for r in runs if r.status == "finished"), key=_sort_key)
    if not finished:
        return None
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns, _ = _heat_table(finished, HEATMAP_METRICS[0])
    width = 2.0 + 0.55 * len(columns)
    fig = Figure(figsize=(width * len(HEATMAP_METRICS), 1.2 + 0.4 * len(finished)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(HEATMAP_METRICS), squeeze=False)[0]
    for i, (ax, metric) in enumerate(zip(axes, HEATMAP_METRICS)):
        columns, table = _heat_table(finished, metric)
        values = np.array(table, dtype=float)  # (runs, classes + mean)
        image = ax.imshow(
            values,
            cmap="viridis",
            vmin=np.nanmin(values) if np.isfinite(values).any() else 0,
            vmax=100,
            aspect="auto",
        )
        ax.set_title(metric)
        ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(finished)), [r.name for r in finished] if i == 0 else [], fontsize=7)
        if values.size <= 400:
            for (y, x), v in np.ndenumerate(values):
                if np.isfinite(v):
                    light = image.norm(v) > 0.6  # viridis turns yellow: dark text there
                    colour = "black" if light else "white"
                    ax.text(x, y, f"{v:.1f}", ha="center", va="center", fontsize=6, color=colour)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110), mode="wb")


def build_leaderboard(sweep_dir: str | Path) -> dict[str, Any]:
    """Collect every run of `sweep_dir` and write the leaderboard files into it."""
    sweep_dir = Path(sweep_dir)
    runs = collect(sweep_dir)
    paths = {
        "csv": write_text(sweep_dir / "leaderboard.csv", to_csv(runs)),
        "md": write_text(sweep_dir / "leaderboard.md", to_markdown(runs, sweep_dir)),
        "png": write_heatmap(runs, sweep_dir / "leaderboard.png"),
    }
    paths["html"] = write_text(
        sweep_dir / "leaderboard.html", leaderboard_page(runs, sweep_dir, paths["png"])
    )
    failed = [r for r in runs if r.status == "failed"]
    log.info("leaderboard of %d runs (%d failed) -> %s", len(runs), len(failed), sweep_dir / "leaderboard.md")
    for run in failed:
        log.error("failed run %s: %s (see %s)", run.name, run.error, run.path / ERROR_FILE)
    return {"runs": runs, "paths": paths}


class LeaderboardCallback(Callback):
    """Hydra callback: at the end of a multirun, build the sweep's leaderboard (and send it to W&B when the
    sweep logs there). Listed under `hydra.callbacks` in conf/hydra/default.yaml."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        board = build_leaderboard(config.hydra.sweep.dir)
        wandb_cfg = OmegaConf.select(config, "logger.wandb")
        if wandb_cfg is not None and board["runs"]:
            columns, rows = leaderboard_table(board["runs"])
            sweep_dir = Path(config.hydra.sweep.dir)
            log_leaderboard(columns, rows, board["paths"].get("png"), sweep_dir, wandb_cfg.get("project"))


def leaderboard_table(runs: list[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    """The leaderboard as columns and rows (one per run) for a table logger."""
    columns = ["run", "status", *IDENTITY, "overrides", *METRIC_NAMES, "error"]
    rows = [
        [r.name, r.status, *(r.identity.get(k) for k in IDENTITY), r.overrides_text]
        + [r.mean.get(k) for k in METRIC_NAMES]
        + [r.error]
        for r in runs
    ]
    return columns, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m uad.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (or any folder holding run folders)")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    board = build_leaderboard(args.sweep_dir)
    print(board["paths"]["md"].read_text())


if __name__ == "__main__":
    main()
