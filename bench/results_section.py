"""One bench script's own section of bench/results.md, replaced in place (or added), written atomically."""

from __future__ import annotations

from pathlib import Path

KEPT = "<!-- make bench keeps what follows"  # run_all.py's marker: hand-measured sections below it survive


def write_section(results: Path, heading: str, lines: list[str]) -> None:
    """Replace the section that starts at the line `heading` (up to the next "## " heading) by `lines`. A new
    section goes above run_all's KEPT line, so that `make bench` rewrites it rather than keeping a copy; the
    rest of the file is kept."""
    from uad.utils.io import write_text

    text = results.read_text() if results.exists() else "# Benchmarks\n"
    head, found, tail = text.partition(heading)
    if found:
        rest = tail.split("\n## ", 1)
        tail = "\n## " + rest[1] if len(rest) == 2 else ""
    elif KEPT in text:
        head, marker, tail = text.partition(KEPT)
        tail = "\n" + marker + tail
    else:
        head, tail = head.rstrip("\n") + "\n\n", ""
    write_text(results, head + "\n".join(lines).rstrip("\n") + "\n" + tail)
