"""The state of one run folder (`status.json`, plus `error.txt` when it failed), so that a sweep can go on
past a failed job and the leaderboard can name it with its error.

status.json: {"status": "running" | "finished" | "failed", "error": "<Type>: <message>" | null,
              "started": ISO time, "ended": ISO time | null, "seconds": float | null}
"""

from __future__ import annotations

import json
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from uad.utils.io import write_json, write_text

STATUS_FILE = "status.json"
ERROR_FILE = "error.txt"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunStatus:
    """Marks a run folder as running, then finished or failed (atomic writes, rank zero only by caller)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / STATUS_FILE
        self._start = time.perf_counter()
        self._record: dict[str, Any] = {"status": "running", "error": None, "started": _now(), "ended": None}
        write_json(self.path, self._record | {"seconds": None})

    def _end(self, status: str, error: str | None) -> None:
        seconds = time.perf_counter() - self._start
        write_json(
            self.path, self._record | {"status": status, "error": error, "ended": _now(), "seconds": seconds}
        )

    def finished(self) -> None:
        self._end("finished", None)

    def failed(self, err: BaseException) -> str:
        """Record the failure; the full traceback goes to error.txt. Returns the one-line error."""
        message = error_line(err)
        write_text(self.path.parent / ERROR_FILE, "".join(traceback.format_exception(err)))
        self._end("failed", message)
        return message


def error_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
