"""The suite sweeper, leaderboards, multiruns and launchers, through the real configs and `run.py`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from hydra_plugins.uad_sweeper.suite_sweeper import expand_suite
from tests.conftest import CONF_DIR, compose_hydra_config
from tests.helpers.commands import FEATREC, SWEEP_TINY, run_py
from uad import leaderboard, pipeline
from uad.metrics import METRIC_NAMES
from uad.results import Results
from uad.runstatus import RunStatus

PAPER = {"uniad": ["effb4"], "dinomaly": ["dinov2_vitb14_reg", "dinov2_vits14_reg"], "dualad_he": ["wres50"]}


def _jobs(*overrides: str) -> list[list[str]]:
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return expand_suite(parsed, ["uniad", "dinomaly", "dualad_he"], ["mvtec", "visa"], PAPER)


def test_plain_multirun_is_the_suite_of_paper_pairings():
    jobs = {tuple(sorted(job)) for job in _jobs("trainer.max_epochs=3")}
    expected = {
        tuple(sorted(["trainer.max_epochs=3", f"method={m}", f"backbone={b}", f"dataset={d}"]))
        for m, backbones in PAPER.items()
        for b in backbones
        for d in ("mvtec", "visa")
    }
    assert jobs == expected and len(jobs) == 8


def test_swept_methods_run_on_their_paper_backbones_unless_a_backbone_is_given():
    assert _jobs("method=uniad,dinomaly", "dataset=mvtec") == [
        ["method=uniad", "dataset=mvtec", "backbone=effb4"],
        ["method=dinomaly", "dataset=mvtec", "backbone=dinov2_vitb14_reg"],
        ["method=dinomaly", "dataset=mvtec", "backbone=dinov2_vits14_reg"],
    ]
    assert _jobs("method=uniad,featrec", "backbone=wres50") == [
        ["method=uniad", "backbone=wres50"],
        ["method=featrec", "backbone=wres50"],
    ]


def test_jobs_get_the_paper_recipe_of_their_method_and_dataset_when_there_is_one():
    parsed = OverridesParser.create().parse_overrides(["method=dualad_ho,featrec", "dataset=mvtec"])
    jobs = expand_suite(parsed, [], [], {"dualad_ho": ["wres50"]}, recipes={"dualad_mvtec", "uniad_mvtec"})
    assert jobs == [
        ["method=dualad_ho", "dataset=mvtec", "backbone=wres50", "experiment=dualad_mvtec"],
        ["method=featrec", "dataset=mvtec"],
    ]


def test_a_hyperparameter_sweep_replaces_the_suite():
    assert _jobs("method.optimizer.lr=1e-4,2e-4") == [
        ["method.optimizer.lr=0.0001"],
        ["method.optimizer.lr=0.0002"],
    ]


def test_the_suite_config_pairs_every_method_with_existing_backbones():
    sweeper = compose_hydra_config().hydra.sweeper
    assert sweeper._target_.endswith("SuiteSweeper") and set(sweeper.datasets) >= {"mvtec", "visa"}
    assert set(sweeper.methods) == set(sweeper.paper_backbones)
    backbones = {p.stem for p in (CONF_DIR / "backbone").glob("*.yaml")}
    assert {b for pair in sweeper.paper_backbones.values() for b in pair} <= backbones


def test_objective_is_the_class_mean_of_the_optimized_metric(tiny_cfg):
    results = {"mean": {"I-AUROC": 0.75, "AUPRO": 0.5}}
    assert pipeline.objective(tiny_cfg(), results) is None  # no search configured
    cfg = tiny_cfg("+optimized_metric=AUPRO")
    assert pipeline.objective(cfg, results) == 0.5 and pipeline.objective(cfg, None) is None
    with pytest.raises(KeyError, match="P-AUROC"):
        pipeline.objective(tiny_cfg("+optimized_metric=P-AUROC"), results)


def test_optuna_search_config_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'uad[optuna]'")
    cfg = compose_hydra_config("hparams_search=optuna")
    assert cfg.optimized_metric == "I-AUROC" and cfg.hydra.sweeper.direction == "maximize"


# --- the leaderboard -----------------------------------------------------------------------------------


def _fake_run(folder: Path, method: str, value: float, classes=("a", "b")) -> None:
    metrics = {k: value for k in METRIC_NAMES}
    run = {"method": method, "backbone": "bb", "dataset": "ds", "setting": "unified"}
    Results({c: metrics for c in classes}, {"name": "r224"}, run).write(folder)
    RunStatus(folder).finished()


def test_leaderboard_ranks_finished_runs_and_names_failed_ones(tmp_path):
    _fake_run(tmp_path / "0_low", "low", 0.5)
    _fake_run(tmp_path / "1_high", "high", 0.9)
    _fake_run(tmp_path / "2_separate", "sep", 0.7)
    _fake_run(tmp_path / "2_separate" / "classes" / "a", "sep", 0.1, classes=("a",))  # inside a run: not one
    try:
        raise ValueError("out of memory\nmore detail")
    except ValueError as err:
        RunStatus(tmp_path / "3_broken").failed(err)

    (tmp_path / "4_garbled").mkdir()
    (tmp_path / "4_garbled" / "results.json").write_text("{not json")

    board = leaderboard.build_leaderboard(tmp_path)
    assert [r.name for r in board["runs"]] == ["0_low", "1_high", "2_separate", "3_broken", "4_garbled"]
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert markdown.index("| 1_high") < markdown.index("| 2_separate") < markdown.index("| 0_low")
    assert "`3_broken` (failed): ValueError: out of memory" in markdown
    assert "Traceback" in (tmp_path / "3_broken" / "error.txt").read_text()
    rows = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert "`4_garbled` (unreadable): unreadable results.json" in markdown
    assert len(rows) == 1 + 3 * 3 + 2  # header, (a, b, mean) per finished run, one row per other run
    assert rows[0].split(",")[:3] == ["run", "status", "method"]
    assert (tmp_path / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*.tmp"))


def test_leaderboard_command_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="sweep folder"):
        leaderboard.main([str(tmp_path / "nowhere")])


# --- multiruns through run.py --------------------------------------------------------------------------


@pytest.mark.slow
def test_two_by_two_multirun_gives_four_results_and_a_leaderboard(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    run_py(
        "-m",
        *SWEEP_TINY,
        "backbone=effnet_lite0,effnet_lite1",
        "method.model.bottleneck_dim=16,32",
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert len(jobs) == 4
    assert {json.loads((j / "status.json").read_text())["status"] for j in jobs} == {"finished"}
    lines = (sweep / "leaderboard.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("| ") and "_featrec-" in line]
    assert len(table) == 4
    assert sum("effnet_lite1" in line and "bottleneck_dim=32" in line for line in table) == 1
    assert (sweep / "leaderboard.png").is_file()
    page = (sweep / "leaderboard.html").read_text()  # links each run's report (Chromium: test_report_browser)
    assert all(f'href="{job.name}/report.html"' in page and (job / "report.html").is_file() for job in jobs)


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    run_py(
        "-m",
        *FEATREC,
        "dataset.classes=[weave],[no_such_class]",
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    done, failed = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert (done / "results.json").is_file()
    assert json.loads((failed / "status.json").read_text())["status"] == "failed"
    assert "no_such_class" in (failed / "error.txt").read_text()
    markdown = (sweep / "leaderboard.md").read_text()
    assert "1 finished, 1 failed" in markdown and "DatasetLayoutError" in markdown


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path, data_dir):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install 'uad[sweeps]'")
    sweep = tmp_path / "sweep"
    run_py(
        "-m",
        *SWEEP_TINY,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "method.model.bottleneck_dim=16,32",
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert len([p for p in sweep.iterdir() if (p / "results.json").is_file()]) == 2
    assert "2 finished, 0 failed" in (sweep / "leaderboard.md").read_text()


def test_slurm_launcher_takes_gpus_time_and_partition_from_the_command_line():
    cfg = compose_hydra_config(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=240",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min) == ("gpu", 240)
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    assert cfg.trainer.strategy == "ddp"


def test_joblib_launcher_config_composes():
    cfg = compose_hydra_config("hydra/launcher=joblib", "hydra.launcher.n_jobs=4")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 4


@pytest.mark.slow
def test_cfg_job_composes_with_the_slurm_launcher(tmp_path):
    proc = run_py("hydra/launcher=slurm", "trainer=ddp", "--cfg", "job", cwd=tmp_path, timeout=120)
    assert "strategy: ddp" in proc.stdout
