"""How a run, or every run of a sweep folder, stands now: running, finished, failed, interrupted, or "died"
(marked running, but its process is gone or its heartbeat stopped).

    python -m uad.status outputs/runs/<run>          # one run
    python -m uad.status outputs/multiruns/<sweep>   # every run below it

`runs_below` is what the leaderboard calls.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uad.runstatus import STATUS_FILE, heartbeat_age, read_status, run_state


@dataclass
class RunState:
    """One run folder's state, as `python -m uad.status` prints it."""

    path: Path
    state: str
    record: dict[str, Any]

    def line(self, root: Path) -> str:
        name = str(self.path.relative_to(root)) if self.path != root else str(self.path)
        r = self.record
        if self.state == "died":
            age = heartbeat_age(r)
            beat = f", last heartbeat {age:.0f} s ago" if age is not None else ""
            detail = f"pid {r.get('pid')} on {r.get('host')} is gone{beat}; resume with ckpt_path="
            detail += (
                f"{self.path / 'checkpoints' / 'last.ckpt'}" if (self.path / "checkpoints").is_dir() else ""
            )
        elif self.state == "interrupted":
            detail = f"{r.get('signal')} at {r.get('ended')}; checkpoint {r.get('checkpoint')}"
        elif self.state == "failed":
            detail = str(r.get("error"))
        elif self.state == "running":
            detail = f"pid {r.get('pid')} on {r.get('host')}, started {r.get('started')}"
        else:
            detail = f"{r.get('seconds') or 0:.0f} s" if self.state == "finished" else ""
        return f"{self.state:<11} {name}  {detail}".rstrip()


def state_of(run_dir: str | Path) -> RunState:
    record = read_status(run_dir) or {}
    return RunState(Path(run_dir), run_state(record), record)


def runs_below(folder: str | Path) -> list[RunState]:
    """Every run folder at or below `folder` (outermost only: a separate-setting run holds its classes)."""
    folder = Path(folder)
    found: list[Path] = []
    for status in sorted(folder.rglob(STATUS_FILE)):
        run_dir = status.parent
        if not any(parent in found for parent in run_dir.parents):
            found.append(run_dir)
    return [state_of(p) for p in found]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uad.status", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a run folder or a sweep folder")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: '{args.folder}' is not a folder; give a run or sweep folder", file=sys.stderr)
        return 1
    runs = runs_below(args.folder)
    if not runs:
        print(f"error: no run under '{args.folder}' (no {STATUS_FILE})", file=sys.stderr)
        return 1
    for run in runs:
        print(run.line(args.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
