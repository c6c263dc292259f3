"""One bench script's own section of bench/results.md, replaced in place (or added), written atomically."""

from __future__ import annotations

from pathlib import Path

KEPT = "<!-- make bench keeps what follows"  # what starts run_all.py's marker line
KEPT_LINE = f"{KEPT} (hand-measured, make gpu-check) and rewrites what is above -->"  # hand-measured below it


def write_section(results: Path, heading: str, lines: list[str]) -> None:
    """Replace the section whose heading line is `heading` (up to the next "## " heading or run_all's KEPT
    line, which stays) by `lines`. A new section goes above the KEPT line, so that `make bench` rewrites it
    rather than keeping a copy; the rest of the file is kept."""
    from uad.utils.io import write_text

    rows = (results.read_text() if results.exists() else "# Benchmarks\n").split("\n")
    kept = next((i for i, row in enumerate(rows) if row.startswith(KEPT)), None)
    if heading in rows:
        start = rows.index(heading)
        ends = (i for i in range(start + 1, len(rows)) if rows[i].startswith(("## ", KEPT)))
        before, after = rows[:start], rows[next(ends, len(rows)) :]
    elif kept is not None:
        before, after = rows[:kept], rows[kept:]
    else:
        before, after = [*"\n".join(rows).rstrip("\n").split("\n"), ""], []
    body = "\n".join(lines).rstrip("\n").split("\n")
    write_text(results, "\n".join([*before, *body, "", *after]))
