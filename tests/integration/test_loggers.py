"""The W&B and TensorBoard loggers: offline W&B runs, W&B resume by id, a clear error without TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uad import leaderboard, pipeline
from uad.metrics import METRIC_NAMES


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
