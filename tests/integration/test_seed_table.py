"""experiment=seed_table: the DualAD paper's comparison table as one sweep, and its seed-layout table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.uad_sweeper.suite_sweeper import expand_columns
from tests.conftest import CONF_DIR
from tests.helpers.commands import run_py
from uad.leaderboard import RunRecord
from uad.seed_table import load_paper_table, seed_rows, to_markdown

SEED_TABLE = OmegaConf.load(CONF_DIR / "experiment" / "seed_table.yaml").hydra.sweeper


def _jobs(*overrides: str) -> list[list[str]]:
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return expand_columns(
        parsed, SEED_TABLE.columns, SEED_TABLE.debug_overrides, SEED_TABLE.debug_column_overrides
    )


def test_one_job_per_column_on_its_recipe_for_each_swept_dataset():
    jobs = _jobs("experiment=seed_table", "dataset=mvtec,visa", "dataset.root=/d")
    assert len(jobs) == 2 * len(SEED_TABLE.columns)
    assert ["dataset=mvtec", "dataset.root=/d", "experiment=rd4ad_ader256", "method=rd4ad"] in jobs
    assert ["dataset=visa", "dataset.root=/d", "experiment=dualad_mvtec", "method=dualad_he"] in jobs
    assert not any("experiment=seed_table" in job or "backbone.pretrained=false" in job for job in jobs)


def test_debug_tiny_jobs_get_the_debug_overrides_the_command_line_leaves():
    jobs = _jobs("experiment=seed_table", "debug=tiny", "dataset=mvtec")
    uniad = next(job for job in jobs if "method=uniad" in job)
    assert "backbone.pretrained=false" in uniad and "method.model.neighbor_size=3" in uniad
    assert "dataset=synthetic" not in uniad  # the command line's dataset wins


def test_the_paper_table_holds_the_four_tables():
    paper = load_paper_table()
    assert len(paper) == (16 + 13) * 6  # (MVTec 15 + VisA 12 classes, + mean) x 6 methods
    assert all(len(metrics) == 4 for metrics in paper.values())  # 2 tables of 2 figures per dataset
    assert paper["mvtec", "mean", "rd4ad"] == {
        "I-AP": 96.5,
        "I-F1max": 95.2,
        "I-AUROC": 94.6,
        "P-AUROC": 96.1,
    }
    assert paper["visa", "pcb4", "vitad"]["I-F1max"] == 96.6
    assert paper["visa", "mean", "dualad"]["P-AUROC"] == 98.9


def test_the_seed_layout_puts_ours_beside_the_paper(tmp_path):
    run = RunRecord(
        path=tmp_path,
        name="0_rd4ad",
        status="finished",
        identity={"method": "rd4ad", "dataset": "mvtec"},
        overrides=[],
        per_class={"bottle": {"I-AUROC": 0.99, "P-AUROC": 0.975}},
        mean={"I-AUROC": 0.99, "P-AUROC": 0.975},
    )
    rows = seed_rows([run], load_paper_table())
    bottle = {r["method"]: r for r in rows if r["class"] == "bottle"}
    assert bottle["rd4ad"]["I-AUROC"] == pytest.approx(99.0) and bottle["rd4ad"]["paper I-AUROC"] == 99.6
    assert bottle["diad"]["I-AUROC"] is None and bottle["diad"]["paper P-AUROC"] == 98.4  # the paper's only
    text = to_markdown(rows, tmp_path)
    assert "| bottle | 99.0/97.5 (99.6/97.8) | -/- (99.7/98.1) |" in text


def test_an_extra_column_runs_its_recipe_and_gets_its_title(tmp_path):
    """+hydra.sweeper.columns.inpformer=inpformer_mvtec: one more job, its own column after the paper's."""
    columns = {**SEED_TABLE.columns, "inpformer": "inpformer_mvtec"}
    parsed = OverridesParser.create().parse_overrides(["experiment=seed_table", "dataset=mvtec"])
    jobs = expand_columns(parsed, columns, SEED_TABLE.debug_overrides, SEED_TABLE.debug_column_overrides)
    assert ["dataset=mvtec", "experiment=inpformer_mvtec", "method=inpformer"] in jobs
    run = RunRecord(
        path=tmp_path,
        name="5_inpformer",
        status="finished",
        identity={"method": "inpformer", "dataset": "mvtec"},
        overrides=[],
        per_class={"bottle": {"I-AUROC": 1.0, "P-AUROC": 0.99}},
        mean={"I-AUROC": 1.0, "P-AUROC": 0.99},
    )
    text = to_markdown(seed_rows([run], load_paper_table()), tmp_path)
    assert "| DualAD-He | INP-Former |" in text and "| 100.0/99.0 |" in text


@pytest.mark.slow
def test_seed_table_debug_tiny_sweep_has_a_cell_for_every_method_and_class(tmp_path):
    sweep = tmp_path / "sweep"
    run_py(
        "-m", "experiment=seed_table", "debug=tiny", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=1200
    )
    with (sweep / "seed_table.csv").open() as f:
        rows = list(csv.DictReader(f))
    cells = {(r["class"], r["method"]) for r in rows if r["I-AUROC"] and r["P-AUROC"]}
    methods = {"dualad" if m == "dualad_he" else m for m in SEED_TABLE.columns}
    classes = {"nut", "pill", "weave", "mean"}  # debug=tiny's synthetic classes
    assert cells == {(c, m) for c in classes for m in methods}
    assert (Path(sweep) / "leaderboard.md").is_file()
