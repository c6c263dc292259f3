"""`python -m uad.report FOLDER`: (re)build the report of a run folder (results.json), a `mode=predict`
folder, or a sweep folder (leaderboard.html)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uad.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a run folder, a mode=predict folder or a sweep folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder: Path = args.folder
    if not folder.is_dir():
        print(f"error: '{folder}' is not a folder; pass a run, predict or sweep folder", file=sys.stderr)
        return 1
    if (folder / "results.json").is_file():
        from uad.report.run_report import build_run_report

        path = build_run_report(folder).path
    elif (folder / "predictions.csv").is_file():
        from uad.report.predict_report import build_predict_report

        path = build_predict_report(folder).path
    else:
        from uad.leaderboard import build_leaderboard

        path = build_leaderboard(folder)["paths"]["html"]
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
