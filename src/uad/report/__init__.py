"""Self-contained HTML reports a person opens: `report.html` in every run folder (written at the end of
evaluation), `leaderboard.html` in every sweep folder, and `report.html` for a `mode=predict` batch. Each is
rebuilt from the files in its folder with `python -m uad.report FOLDER`."""

from __future__ import annotations

import time
from pathlib import Path

from uad.utils.logging import get_logger

log = get_logger(__name__)


def write_report(output_dir: str | Path, mode: str) -> Path | None:
    """The report of a finished `mode` (train, eval or predict) run, sent to W&B too when a W&B run is
    active. A report that cannot be built is logged as an error and never fails the run: its results are
    already written."""
    output_dir = Path(output_dir)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        if mode == "predict":
            from uad.report.predict_report import build_predict_report

            report = build_predict_report(output_dir)
        elif (output_dir / "results.json").is_file():
            from uad.report.run_report import build_run_report

            report = build_run_report(output_dir)
        else:
            return None
        from uad.report.wandb_log import log_report

        log_report(report)
    except Exception as err:  # the results are written: a broken page must not fail the run
        log.error("report.html not written: %s: %s", type(err).__name__, err, exc_info=True)
        return None
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    log.info("report: %s (%.1f s, %.1f CPU-s)", report.path, wall, cpu)
    return report.path
