"""A single run's failure record, DDP inside a multirun, GPU pinning, and a killed run resumed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import open_dict

from tests.conftest import compose_hydra_config
from tests.helpers.commands import FEATREC, run_py
from uad import pipeline
from uad.metrics import METRIC_NAMES
from uad.utils import hydra_job


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
    common = [*FEATREC, "dataset.classes=[weave,nut]"]
    run_py(
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
    run_py(
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


@pytest.mark.slow
def test_the_default_method_runs_distributed_and_equals_one_process(tmp_path, data_dir, tiny_cfg):
    """`python run.py trainer=ddp trainer.devices=2 trainer.accelerator=cpu` with the default method:
    PatchCore has no trainable parameter (no DistributedDataParallel wrapper) and every rank keeps the
    training features of all ranks, so each fits the bank one process fits (the same rows, up to float
    rounding). 5 training and 5 test images: the sampler repeats one of each; fit and evaluation drop it."""
    common = ["method=patchcore", "dataset.classes=[nut]"]
    ddp_dir = tmp_path / "ddp"
    run_py(
        *FEATREC,
        *common,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={ddp_dir}",
        cwd=tmp_path,
    )
    ddp = json.loads((ddp_dir / "results.json").read_text())
    cfg = tiny_cfg(*common)
    one = pipeline.run(cfg)
    for metric in METRIC_NAMES:
        assert ddp["per_class"]["nut"][metric] == pytest.approx(one["per_class"]["nut"][metric], abs=1e-4)
    banks = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]["net.bank"]
        for run in (ddp_dir, Path(cfg.paths.output_dir))
    ]
    torch.testing.assert_close(*banks, rtol=0, atol=1e-4)


def test_ddp_children_of_a_multirun_job_rerun_only_that_job_in_its_folder(tmp_path, monkeypatch):
    """What Lightning's `ddp` launcher runs for rank 1 (its own `_hydra_subprocess_cmd`) after the fix:
    the job's overrides, no `-m`, the job's folder, the config directory flags kept."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd

    cfg = compose_hydra_config("trainer.max_epochs=3")
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

    hydra_cfg = compose_hydra_config()
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
