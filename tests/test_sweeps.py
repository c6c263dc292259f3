"""Sweeps, leaderboards, DDP, launchers, W&B and resume, through the real configs and `run.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch import Callback
from omegaconf import open_dict

from hydra_plugins.uad_sweeper.suite_sweeper import expand_suite
from tests.conftest import CONF_DIR, ROOT
from uad import leaderboard, pipeline
from uad.metrics import METRIC_NAMES
from uad.results import build_results, write_results
from uad.runstatus import RunStatus
from uad.utils import hydra_job

PYTHONPATH = os.pathsep.join(p for p in [str(ROOT / "src"), os.environ.get("PYTHONPATH")] if p)
ENV = {**os.environ, "PYTHONPATH": PYTHONPATH, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
PAPER = {"uniad": ["effb4"], "dinomaly": ["dinov2_vitb14_reg", "dinov2_vits14_reg"], "dualad_he": ["wres50"]}


def _run_py(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _jobs(*overrides: str) -> list[list[str]]:
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return expand_suite(parsed, ["uniad", "dinomaly", "dualad_he"], ["mvtec", "visa"], PAPER)


# --- the suite sweeper ---------------------------------------------------------------------------------


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
    sweeper = _hydra_cfg().hydra.sweeper
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
    cfg = _hydra_cfg("hparams_search=optuna")
    assert cfg.optimized_metric == "I-AUROC" and cfg.hydra.sweeper.direction == "maximize"


# --- the leaderboard -----------------------------------------------------------------------------------


def _fake_run(folder: Path, method: str, value: float, classes=("a", "b")) -> None:
    metrics = {k: value for k in METRIC_NAMES}
    run = {"method": method, "backbone": "bb", "dataset": "ds", "setting": "unified"}
    write_results(folder, build_results({c: metrics for c in classes}, {"name": "r224"}, run))
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

FEATREC = ["debug=tiny"]  # the fast FeatRec baseline on small synthetic data
SWEEP_TINY = [*FEATREC, "dataset.classes=[weave]"]


@pytest.mark.slow
def test_two_by_two_multirun_gives_four_results_and_a_leaderboard(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    _run_py(
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


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    _run_py(
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
    _run_py(
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


def test_a_single_run_still_raises_and_records_the_failure(tiny_cfg):
    cfg = tiny_cfg("method=featrec", "dataset.classes=[no_such_class]")
    with pytest.raises(Exception, match="no_such_class"):
        pipeline.run(cfg)
    status = json.loads((Path(cfg.paths.output_dir) / "status.json").read_text())
    assert status["status"] == "failed" and "no_such_class" in status["error"]


# --- DDP -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_process_ddp_in_a_multirun_matches_one_process(tmp_path, data_dir):
    """Lightning's `ddp` (gloo on CPU) inside `-m`: the second rank runs the same job in the same folder
    (no second sweep), and evaluation over 11 test images (so the sampler pads one) equals one process's
    evaluation of the same checkpoint."""
    sweep = tmp_path / "sweep"
    common = [*FEATREC, "dataset.classes=[weave,nut]", "callbacks=default", "~callbacks.progress"]
    _run_py(
        "-m",
        *common,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "hydra.sweeper.methods=[featrec]",
        "hydra.sweeper.datasets=[synthetic]",
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    (job,) = [p for p in sweep.iterdir() if p.is_dir()]
    ddp = json.loads((job / "results.json").read_text())
    assert len((job / "predictions.csv").read_text().splitlines()) == 1 + 11
    single = tmp_path / "single"
    _run_py(
        *common,
        f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={single}",
        cwd=tmp_path,
    )
    one = json.loads((single / "results.json").read_text())
    for name in ["weave", "nut"]:
        for metric in METRIC_NAMES:
            assert ddp["per_class"][name][metric] == pytest.approx(one["per_class"][name][metric], abs=1e-4)


def test_ddp_children_of_a_multirun_job_rerun_only_that_job_in_its_folder(tmp_path, monkeypatch):
    """What Lightning's `ddp` launcher runs for rank 1 (its own `_hydra_subprocess_cmd`) after the fix:
    the job's overrides, no `-m`, the job's folder, the config directory flags kept."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd

    cfg = _hydra_cfg("trainer.max_epochs=3")
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.cwd = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr(sys, "argv", ["run.py", "-m", "--config-dir", "/cfg", "trainer.max_epochs=3,4"])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)  # as under `python run.py`, not pytest
    job_dir = tmp_path / "sweep" / "0_job"
    try:
        hydra_job.ddp_children_run_this_job(job_dir)
        command, cwd = _hydra_subprocess_cmd(local_rank=1)
    finally:
        HydraConfig.instance().cfg = None
    assert command[1:5] == [
        str(tmp_path / "run.py"),
        "--config-dir",
        "/cfg",
        "trainer.max_epochs=3",
    ]
    assert command[-3] == f'hydra.run.dir="{job_dir}"' and cwd == str(tmp_path)


def test_sweep_jobs_take_gpus_round_robin(tiny_cfg, monkeypatch):
    """Job i of a multirun runs on GPU i mod N when it asks for one device of several."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = _hydra_cfg()
    with open_dict(hydra_cfg):
        hydra_cfg.hydra.mode = RunMode.MULTIRUN
        hydra_cfg.hydra.job.num = 5
    HydraConfig.instance().set_config(hydra_cfg)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    try:
        gpu, cpu = tiny_cfg("trainer.accelerator=gpu"), tiny_cfg()
        two = tiny_cfg("trainer.accelerator=gpu", "trainer.devices=2")
        for cfg in (gpu, cpu, two):
            hydra_job.pin_job_device(cfg)
    finally:
        HydraConfig.instance().cfg = None
    assert list(gpu.trainer.devices) == [1]
    assert cpu.trainer.devices == 1 and two.trainer.devices == 2


# --- checkpoints and resume ----------------------------------------------------------------------------


class KillAfterFirstEpoch(Callback):
    """Stands in for a crash or a cluster pre-emption once the first epoch's checkpoint is written."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")


def test_a_killed_run_resumes_to_the_uninterrupted_metrics(tiny_cfg, tmp_path):
    schedule = [
        "method=featrec",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "callbacks=default",
        "~callbacks.progress",
    ]

    def cfg_in(folder: str, *extra: str):
        cfg = tiny_cfg(*schedule, *extra)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / folder)
        return cfg

    uninterrupted = pipeline.run(cfg_in("whole"))
    with pytest.raises(RuntimeError, match="killed"):
        pipeline.run(cfg_in("killed", f"+callbacks.kill._target_={__name__}.KillAfterFirstEpoch"))
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    resumed = pipeline.run(cfg_in("resumed", f"ckpt_path={last}"))
    for name, metrics in uninterrupted["per_class"].items():
        assert resumed["per_class"][name] == pytest.approx(metrics, abs=1e-6)
    run = resumed["run"]
    assert run["seed"] == 133 and run["deterministic"] is True
    assert run["versions"]["torch"] and "git_commit" in run


# --- W&B -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_wandb_offline_run_holds_the_table_and_the_overlays(tiny_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = tiny_cfg("method=featrec", "logger=wandb", "dataset.classes=[weave]")
    pipeline.run(cfg)
    out = Path(cfg.paths.output_dir)
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    media = run_dir / "files" / "media"
    (table,) = media.glob("table/test/per_class_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"] == ["class", *METRIC_NAMES] and [row[0] for row in data["data"]] == [
        "weave",
        "mean",
    ]
    assert list(media.glob("images/test/overlays_*.png"))
    run_id = (out / "wandb_run_id.txt").read_text().strip()
    assert run_id in run_dir.name

    from uad.loggers import log_leaderboard

    sweep = out.parent
    board = leaderboard.build_leaderboard(sweep)
    columns, rows = leaderboard.leaderboard_table(board["runs"])
    log_leaderboard(columns, rows, board["paths"].get("png"), sweep, project="uad")
    (board_dir,) = (sweep / "wandb").glob("offline-run-*")
    assert list((board_dir / "files" / "media").glob("table/leaderboard_*.table.json"))
    assert list((board_dir / "files" / "media").glob("images/leaderboard_heatmap_*.png"))


def test_a_resumed_run_continues_the_wandb_run_of_its_checkpoint(tmp_path):
    from uad.loggers import RUN_ID_FILE, _run_id

    first = _run_id(tmp_path / "first", None, None)
    assert len(first) == 8 and (tmp_path / "first" / RUN_ID_FILE).read_text().strip() == first
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert _run_id(tmp_path / "resumed", None, str(ckpt)) == first
    assert (tmp_path / "resumed" / RUN_ID_FILE).read_text().strip() == first
    assert _run_id(tmp_path / "other", None, None) != first
    assert _run_id(tmp_path / "given", "abc123", str(ckpt)) == "abc123"


def test_tensorboard_logger_without_its_package_says_how_to_get_it(tmp_path, monkeypatch):
    import importlib.util

    from uad import loggers

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("tensorboard") else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"pip install 'uad\[tensorboard\]'.*logger=csv"):
        loggers.tensorboard_logger(str(tmp_path))


# --- launchers -----------------------------------------------------------------------------------------


def _hydra_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_takes_gpus_time_and_partition_from_the_command_line():
    cfg = _hydra_cfg(
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
    cfg = _hydra_cfg("hydra/launcher=joblib", "hydra.launcher.n_jobs=4")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 4


@pytest.mark.slow
def test_cfg_job_composes_with_the_slurm_launcher(tmp_path):
    proc = _run_py("hydra/launcher=slurm", "trainer=ddp", "--cfg", "job", cwd=tmp_path, timeout=120)
    assert "strategy: ddp" in proc.stdout
