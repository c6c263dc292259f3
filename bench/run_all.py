"""Run every bench/bench_*.py and collect their Markdown sections into bench/results.md.

Each script prints one Markdown section (a heading, the command, a table) on stdout and exits 0. Speed
goals are ratios against a reference measured side by side in the same script, on the same machine.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from results_section import KEPT_LINE  # noqa: E402

from uad.utils.io import write_text  # noqa: E402

RESULTS = HERE / "results.md"


def kept_sections() -> list[str]:
    """The part of results.md below the KEPT line: measurements no bench_*.py makes."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    return [KEPT_LINE, text.partition(KEPT_LINE)[2].strip("\n"), ""]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{platform.node()}: {cpu}, {torch.get_num_threads()} torch threads, GPU: {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def main() -> int:
    only = set(sys.argv[1:])
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not only or p.stem in only)
    sections = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}",
        f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Command: `make bench`.",
        "",
    ]
    failed = []
    for script in scripts:
        start = time.perf_counter()
        print(f"== {script.name}", flush=True)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        took = time.perf_counter() - start
        if proc.returncode:
            failed.append(script.name)
            sections += [
                f"## {script.stem}: FAILED (exit {proc.returncode})",
                "",
                "```",
                proc.stderr[-3000:],
                "```",
                "",
            ]
        else:
            sections += [proc.stdout.strip(), "", f"_{script.name} took {took:.0f} s._", ""]
        print(proc.stdout[-2000:] if not proc.returncode else proc.stderr[-2000:], flush=True)
    write_text(RESULTS, "\n".join([*sections, *kept_sections()]))
    print(f"wrote {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
