"""This process's memory figures from /proc/self/status.

VmHWM is the peak resident set of this process's own address space, reset at exec. The rusage figure
(ru_maxrss) is not: Linux carries the parent's peak across fork and exec, so a worker started from a
large pytest process would report that process's memory as its own.
"""

from __future__ import annotations

from pathlib import Path


def status_mb(key: str) -> float:
    """A /proc/self/status figure in MB (VmRSS, VmHWM = peak resident, VmSize)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)
