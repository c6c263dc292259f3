"""The state of one run folder, true however the run ends: `status.json` (plus `error.txt` when it failed),
a heartbeat that tells a live run from a dead one, and `run.lock`, which keeps a second run out of a folder
a live run holds. A sweep goes on past a failed job, and the leaderboard and `python -m uad.status` name
every run's state.

status.json: {"status": "running" | "finished" | "failed" | "interrupted",
              "error": "<Type>: <message>" | null,
              "started": ISO time, "ended": ISO time | null, "seconds": float | null,
              "pid": int, "host": str, "heartbeat": ISO time, "heartbeat_seconds": float,
              "signal": "SIGTERM" | "SIGINT" | null, "checkpoint": path | null}
A reader sees "died" for a run still marked running whose process is gone (same host) or whose heartbeat
stopped (any host): `run_state`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from uad.errors import UserError
from uad.utils.io import write_json, write_text

STATUS_FILE = "status.json"
ERROR_FILE = "error.txt"
LOCK_FILE = "run.lock"
HEARTBEAT_SECONDS = float(os.environ.get("UAD_HEARTBEAT_SECONDS", 30))
STALE_BEATS = 3  # a heartbeat older than this many periods (plus a minute of clock skew) means dead


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _host() -> str:
    return socket.gethostname()


class RunStatus:
    """Marks a run folder as running (with pid, host and a heartbeat refreshed by a daemon thread), then
    finished, failed or interrupted. Atomic writes; rank zero only, by the caller."""

    def __init__(self, output_dir: str | Path, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.path = Path(output_dir) / STATUS_FILE
        self._start = time.perf_counter()
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._record: dict[str, Any] = {
            "status": "running",
            "error": None,
            "started": _now(),
            "ended": None,
            "seconds": None,
            "pid": os.getpid(),
            "host": _host(),
            "heartbeat": _now(),
            "heartbeat_seconds": heartbeat_seconds,
            "signal": None,
            "checkpoint": None,
        }
        write_json(self.path, self._record)
        self._beat_period = heartbeat_seconds
        threading.Thread(target=self._beat, name="uad-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._ended.wait(self._beat_period):
            with self._lock:
                if self._ended.is_set():
                    return
                self._record["heartbeat"] = _now()
                with contextlib.suppress(OSError):  # a full disk: the next beat tries again
                    write_json(self.path, self._record)

    def _end(self, status: str, **fields: Any) -> None:
        with self._lock:
            self._ended.set()
            self._record |= {"status": status, "ended": _now(), "heartbeat": _now()} | fields
            self._record["seconds"] = time.perf_counter() - self._start
            write_json(self.path, self._record)

    def finished(self) -> None:
        self._end("finished")

    def interrupted(self, signal_name: str, checkpoint: str | None) -> None:
        self._end(
            "interrupted", signal=signal_name, checkpoint=checkpoint, error=f"interrupted by {signal_name}"
        )

    def failed(self, err: BaseException) -> str:
        """Record the failure: status.json first, then the full traceback in error.txt; each write is
        guarded, so a full disk cannot leave the status at "running". Returns the one-line error."""
        message = error_line(err)
        for write in (
            lambda: self._end("failed", error=message),
            lambda: write_text(self.path.parent / ERROR_FILE, "".join(traceback.format_exception(err))),
        ):
            with contextlib.suppress(OSError):
                write()
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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def heartbeat_age(record: dict[str, Any]) -> float | None:
    """Seconds since the record's last heartbeat (None when it has none)."""
    beat = record.get("heartbeat")
    if not beat:
        return None
    try:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(beat)).total_seconds()
    except ValueError:
        return None


def holder_alive(record: dict[str, Any]) -> bool:
    """Whether the process a status or lock record names still runs: by pid on this host, by its heartbeat
    elsewhere (a record from before heartbeats counts as alive: nothing tells otherwise)."""
    if record.get("host") == _host() and record.get("pid"):
        return pid_alive(int(record["pid"]))
    age = heartbeat_age(record)
    if age is None:
        return True
    return age <= STALE_BEATS * float(record.get("heartbeat_seconds") or HEARTBEAT_SECONDS) + 60


def run_state(record: dict[str, Any] | None) -> str:
    """The run's true state: the recorded one, or "died" for a run marked running whose process is gone."""
    if not record:
        return "unknown"
    status = record.get("status") or "unknown"
    if status == "running" and "pid" in record and not holder_alive(record):
        return "died"
    return status


class RunFolderBusy(UserError):
    """Another live run writes into this folder."""


class RunLock:
    """`run.lock` (pid, host, start): one live run per folder. A lock whose process is gone is stale and
    taken over, so a folder of a killed run can be resumed into."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / LOCK_FILE
        self._held = False

    def acquire(self) -> RunLock:
        record = {"pid": os.getpid(), "host": _host(), "started": _now()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                mine = holder.get("pid") == os.getpid() and holder.get("host") == _host()
                if not mine and self._alive(holder):
                    raise RunFolderBusy(
                        f"run folder '{self.path.parent}' is in use by the run with pid {holder.get('pid')} "
                        f"on host {holder.get('host')} (started {holder.get('started')}); give another "
                        f"hydra.run.dir=, or stop that run (a lock left by a dead run is taken over)"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale (or ours): take it over
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
            self._held = True
            return self
        raise RunFolderBusy(
            f"run folder '{self.path.parent}': could not take {LOCK_FILE}; another run races for it"
        )

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # half-written by a starting run, or garbage: judged by the status below

    def _alive(self, holder: dict[str, Any]) -> bool:
        if not holder:  # unreadable: a run that is writing it now, unless it is old
            try:
                return time.time() - self.path.stat().st_mtime < 10
            except OSError:
                return False
        if holder.get("host") == _host():
            return pid_alive(int(holder.get("pid") or 0)) if holder.get("pid") else False
        status = read_status(self.path.parent) or {}
        return status.get("status") == "running" and holder_alive(status)

    def release(self) -> None:
        if self._held:
            self._held = False
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
