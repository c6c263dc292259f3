"""Run state that tells the truth and writes that lose nothing (uad/runstatus.py, uad/status.py,
uad/utils/io.py, uad/utils/checkpoint_io.py, uad/data/resumable.py), values refused before any work
(uad/config_checks.py) and Hydra's errors in one line (uad/utils/cli.py)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import CONF_DIR, compose_config
from uad import runstatus, status
from uad.config_checks import check_config
from uad.data.resumable import ResumableLoader
from uad.errors import UserError
from uad.predict import output_names, walk_files
from uad.runstatus import RunFolderBusy, RunLock, RunStatus, read_status, run_state
from uad.utils import cli, io
from uad.utils.checkpoint_io import AtomicCheckpointIO, CheckpointSaveError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- status.json ------------------------------------------------------------------------------------


def test_status_has_pid_host_and_a_heartbeat_that_beats(tmp_path):
    run = RunStatus(tmp_path, heartbeat_seconds=0.05)
    first = read_status(tmp_path)
    assert first["pid"] == os.getpid() and first["host"] and first["status"] == "running"
    os.utime(tmp_path / "status.json", (0, 0))
    for _ in range(100):  # the daemon thread rewrites the file
        if (tmp_path / "status.json").stat().st_mtime > 0:
            break
        time.sleep(0.02)
    assert (tmp_path / "status.json").stat().st_mtime > 0
    run.finished()
    assert read_status(tmp_path)["status"] == "finished" and run_state(read_status(tmp_path)) == "finished"


def test_a_run_whose_process_is_gone_or_whose_heartbeat_stopped_died(tmp_path):
    record = {
        "status": "running",
        "pid": _dead_pid(),
        "host": runstatus._host(),
        "heartbeat": runstatus._now(),
    }
    assert run_state(record) == "died"
    assert run_state(record | {"pid": os.getpid()}) == "running"
    old = {"status": "running", "pid": 1, "host": "elsewhere", "heartbeat": "2020-01-01T00:00:00+00:00"}
    assert run_state(old) == "died" and run_state(old | {"heartbeat": runstatus._now()}) == "running"
    assert run_state(record | {"status": "finished"}) == "finished"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "status.json").write_text(json.dumps(record))
    assert [r.state for r in status.runs_below(tmp_path)] == ["died"]
    assert status.main([str(tmp_path)]) == 0


def test_a_failed_error_txt_write_still_marks_the_run_failed(tmp_path, monkeypatch):
    run = RunStatus(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runstatus, "write_text", full_disk)
    assert run.failed(ValueError("boom")) == "ValueError: boom"
    assert read_status(tmp_path)["status"] == "failed" and not (tmp_path / "error.txt").exists()


# -- run.lock ---------------------------------------------------------------------------------------


def test_a_live_run_holds_its_folder_and_a_dead_ones_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock = {"pid": holder.pid, "host": runstatus._host(), "started": runstatus._now()}
        (tmp_path / "run.lock").write_text(json.dumps(lock))
        with pytest.raises(RunFolderBusy, match=rf"in use by the run with pid {holder.pid}.*hydra\.run\.dir"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    mine = RunLock(tmp_path).acquire()  # the holder is gone: stale
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    mine.release()
    assert not (tmp_path / "run.lock").exists()


# -- atomic writes ----------------------------------------------------------------------------------


def test_a_failed_checkpoint_save_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    good = {"state_dict": {"w": torch.arange(6.0)}, "epoch": 0}
    AtomicCheckpointIO().save_checkpoint(good, path)
    before = path.read_bytes()
    real_save = torch.save

    def enospc(obj, handle, *args, **kwargs):  # half a file, then the disk is full
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(len(before) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", enospc)
    with pytest.raises(CheckpointSaveError, match=r"last\.ckpt.*No space left.*previous checkpoint is kept"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1000)}}, path)
    assert path.read_bytes() == before and os.listdir(path.parent) == ["last.ckpt"]
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], good["state_dict"]["w"])


def test_the_trainer_saves_through_the_atomic_plugin(tmp_path):
    from uad.builders import build_trainer

    cfg = compose_config(["debug=tiny"], output_dir=tmp_path)
    trainer = build_trainer(cfg, tmp_path, [])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_result_files_get_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        mode = stat.S_IMODE(io.write_text(tmp_path / "r.json", "{}").stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o640


# -- the resumable training loader --------------------------------------------------------------------


def test_an_interrupted_epoch_resumes_in_the_same_order(monkeypatch):
    data = list(range(10))
    torch.manual_seed(3)
    loader = ResumableLoader(data, batch_size=3)
    whole = [b.tolist() for b in loader]
    torch.manual_seed(3)
    first = iter(loader)
    next(first)
    loader.consumed = 1
    state = loader.state_dict()
    again = ResumableLoader(data, batch_size=3)
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == whole[1:]
    torch.manual_seed(3)
    plain = torch.utils.data.DataLoader(data, batch_size=3, shuffle=True)
    assert [b.tolist() for b in plain] == whole  # an uninterrupted run shuffles as before


# -- predict's outputs --------------------------------------------------------------------------------


def test_output_names_are_unique_and_symlinked_folders_are_walked_once(tmp_path):
    root = tmp_path / "in"
    names = output_names(
        [root / "good.png", root / "good.jpg", root / "x" / "y.png", root / "x__y.png", root / "good.JPG"],
        root,
    )
    assert names == ["good", "good-jpg", "x__y", "x__y-png", "good-jpg-2"]
    (root / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.png").write_bytes(b"x")
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    (root / "sub" / "loop").symlink_to(root)
    assert [p.relative_to(root).as_posix() for p in walk_files(root)] == ["linked/a.png"]


# -- config checks and one-line errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("dataset.batch_size=0", "dataset.batch_size"),
        ("predict.batch_size=-1", "predict.batch_size"),
        ("predict.threshold=nan", "predict.threshold"),
        ("predict.threshold=abc", "predict.threshold"),
        ("mode=bogus", "mode"),
        ("dataset=mvtec", "MVTec AD root"),
        ("mode=predict predict.input=/no/such.png", "predict.input"),
    ],
)
def test_values_that_cannot_work_are_refused_by_key(override, key, tmp_path):
    cfg = compose_config(["debug=tiny", *override.split()], output_dir=tmp_path, data_dir=tmp_path)
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        check_config(cfg)


def test_the_default_configs_pass_the_checks(tmp_path):
    check_config(compose_config(["debug=tiny"], output_dir=tmp_path, data_dir=tmp_path))
    check_config(compose_config(["debug=tiny", "mode=predict"], output_dir=tmp_path, data_dir=tmp_path))


def test_hydra_errors_name_the_valid_choices_and_keys():
    line = cli.explain_choice(["feature_cache=false"], CONF_DIR)
    assert "disk, memory, none" in line and "feature_cache=none" in line
    assert "did you mean method=uniad" in cli.explain_choice(["method=unaid"], CONF_DIR)
    assert cli.explain_choice(["method=uniad,dinomaly", "experiment=null"], CONF_DIR) is None
    message = "Could not override 'trainer.max_epochz'.\nKey 'max_epochz' is not in struct"
    line = cli.explain_key(message, ["trainer.max_epochz=3"], lambda parent: ["max_epochs", "max_steps"])
    assert "did you mean trainer.max_epochs?" in line and "+trainer.max_epochz=3" in line


def test_a_requeued_slurm_job_resumes_from_its_folders_last_checkpoint(tmp_path, monkeypatch):
    from uad.callbacks.interrupt import requeued_checkpoint

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeued_checkpoint(tmp_path) is None  # a first attempt starts afresh
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    assert requeued_checkpoint(tmp_path / "elsewhere") is None
