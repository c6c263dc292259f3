"""One bench script's own section of bench/results.md, replaced in place (or appended), written atomically."""

from __future__ import annotations

from pathlib import Path


def write_section(results: Path, heading: str, lines: list[str]) -> None:
    """Replace the section that starts at the line `heading` (up to the next "## " heading) by `lines`, or
    append it; the rest of the file is kept."""
    from uad.utils.io import write_text

    text = results.read_text() if results.exists() else "# Benchmarks\n"
    head, found, tail = text.partition(heading)
    if found:
        rest = tail.split("\n## ", 1)
        tail = "\n## " + rest[1] if len(rest) == 2 else ""
    else:
        head, tail = head.rstrip("\n") + "\n\n", ""
    write_text(results, head + "\n".join(lines).rstrip("\n") + "\n" + tail)
