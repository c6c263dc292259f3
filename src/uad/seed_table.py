"""The comparison table of the DualAD paper, laid out as the paper prints it, with our sweep's numbers.

`python run.py -m experiment=seed_table dataset=mvtec dataset.root=...` runs one job per method
(`hydra.sweeper.columns`); at the end of the sweep this module writes `seed_table.md` and `seed_table.csv`
into the sweep folder: classes as rows, methods as columns, `I-AUROC/P-AUROC` per cell (in %), and the
paper's figure beside ours where it has one (`uad/data/paper_tables/dualad_seed.csv`, which cites its
source). DiAD, which uad does not implement (docs/methods.md), keeps its paper column. Also at any time:

    python -m uad.seed_table outputs/multiruns/<date>_<time>
"""

from __future__ import annotations

import argparse
import csv
import io
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from uad.leaderboard import RunRecord, collect
from uad.utils.io import write_text
from uad.utils.logging import get_logger

log = get_logger(__name__)
PAPER_TABLE = "dualad_seed.csv"
PAPER_METHODS = ("rd4ad", "uniad", "vitad", "diad", "mambaad", "dualad")  # the paper's column order
PAPER_NAME = {"dualad_he": "dualad"}  # our method name -> the paper's column (DualAD's table is He)
TITLES = {
    "rd4ad": "RD4AD",
    "uniad": "UniAD",
    "vitad": "ViTAD",
    "diad": "DiAD",
    "mambaad": "MambaAD",
    "dualad": "DualAD-He",
    "inpformer": "INP-Former",  # an extra column: +hydra.sweeper.columns.inpformer=inpformer_mvtec
}
CELL = ("I-AUROC", "P-AUROC")
PaperTable = dict[tuple[str, str, str], dict[str, float]]  # (dataset, class, paper method) -> metric -> %


def load_paper_table(path: str | Path | None = None) -> PaperTable:
    """The paper's per-class figures (in %), by (dataset, class, paper method) and metric."""
    if path is None:
        text = resources.files("uad.data").joinpath("paper_tables", PAPER_TABLE).read_text()
    else:
        text = Path(path).read_text()
    rows = csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#"))
    table: PaperTable = {}
    for row in rows:
        key = (row["dataset"], row["class"], row["method"])
        table.setdefault(key, {})[row["metric"]] = float(row["value"])
    return table


def _pair(metrics: dict[str, float | None], scale: float) -> str:
    values = [metrics.get(m) for m in CELL]
    return "/".join("-" if v is None else f"{scale * v:.1f}" for v in values)


def seed_rows(runs: list[RunRecord], paper: PaperTable) -> list[dict[str, Any]]:
    """One row per (dataset, class, column): ours and the paper's I-AUROC and P-AUROC (in %, None where
    absent). Columns are the paper's methods in its order; a finished run of another method adds its own."""
    finished = [r for r in runs if r.status == "finished"]
    datasets = list(dict.fromkeys(str(r.identity.get("dataset")) for r in finished))
    rows = []
    for dataset in datasets:
        ours = {}  # paper column -> per class metrics (+ "mean")
        for run in (r for r in finished if str(r.identity.get("dataset")) == dataset):
            method = str(run.identity.get("method"))
            ours[PAPER_NAME.get(method, method)] = {**run.per_class, "mean": run.mean}
        paper_classes = [c for (d, c, _m) in paper if d == dataset]
        classes = list(dict.fromkeys([*(c for m in ours.values() for c in m if c != "mean"), *paper_classes]))
        classes = [c for c in classes if c != "mean"] + ["mean"]
        columns = [*PAPER_METHODS, *(m for m in ours if m not in PAPER_METHODS)]
        for cls in classes:
            for column in columns:
                mine = ours.get(column, {}).get(cls)
                theirs = paper.get((dataset, cls, column), {})
                if mine is None and not theirs:
                    continue
                row = {"dataset": dataset, "class": cls, "method": column}
                for metric in CELL:
                    value = (mine or {}).get(metric)
                    row[metric] = None if value is None else 100 * value
                    row[f"paper {metric}"] = theirs.get(metric)
                rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, Any]], sweep_dir: Path) -> str:
    out = [
        f"# The seed's table: {sweep_dir.name}",
        "",
        "Per class, ours `I-AUROC/P-AUROC` in %, the DualAD paper's figure in brackets "
        "(uad/data/paper_tables/dualad_seed.csv); `-`: no number.",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        part = [r for r in rows if r["dataset"] == dataset]
        columns = list(dict.fromkeys(r["method"] for r in part))
        cells = {(r["class"], r["method"]): r for r in part}
        out += ["", f"## {dataset}", "", "| class | " + " | ".join(TITLES.get(c, c) for c in columns) + " |"]
        out.append("|" + "---|" * (len(columns) + 1))
        for cls in dict.fromkeys(r["class"] for r in part):
            line = [cls]
            for column in columns:
                row = cells.get((cls, column))
                if row is None:
                    line.append("")
                    continue
                mine = _pair({m: row[m] for m in CELL}, 1.0)
                theirs = {m: row[f"paper {m}"] for m in CELL}
                line.append(mine + (f" ({_pair(theirs, 1.0)})" if any(theirs.values()) else ""))
            out.append("| " + " | ".join(line) + " |")
    return "\n".join(out) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["dataset", "class", "method", *CELL, *(f"paper {m}" for m in CELL)]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in fields})
    return buffer.getvalue()


def write_seed_table(sweep_dir: str | Path, paper: PaperTable | None = None) -> dict[str, Path]:
    """Write `seed_table.md` and `seed_table.csv` for the sweep in `sweep_dir`."""
    sweep_dir = Path(sweep_dir)
    rows = seed_rows(collect(sweep_dir), load_paper_table() if paper is None else paper)
    paths = {
        "md": write_text(sweep_dir / "seed_table.md", to_markdown(rows, sweep_dir)),
        "csv": write_text(sweep_dir / "seed_table.csv", to_csv(rows)),
    }
    log.info("the seed's table -> %s", paths["md"])
    return paths


class SeedTableCallback(Callback):
    """Hydra callback (experiment=seed_table): the seed's table at the end of the multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_seed_table(config.hydra.sweep.dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    print(write_seed_table(args.sweep_dir)["md"].read_text())


if __name__ == "__main__":
    main()
