"""What the benchmark scripts share: Markdown tables, the machine line, docs/performance.md.

Each script owns one section of docs/performance.md between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` and rewrites only that section (``--write-docs``), so the hand-written
text around the tables survives every re-measurement.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The document the sections go to; ``PRIVGRID_PERF_DOC`` redirects it (the smoke tests).
DOC = Path(os.environ.get("PRIVGRID_PERF_DOC", ROOT / "docs" / "performance.md"))
#: The 1-minute load average as the benchmark script started (it imports this module first):
#: sections are written at the end, when the benchmark's own processes weigh on it.
START_LOAD = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table; the first column left-aligned, the others right-aligned."""
    align = [":---"] + ["---:"] * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(head: list[str], rows: list[list[str]]) -> str:
    """The same table as fixed-width text for the terminal."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [f"{first:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(rest, widths[1:], strict=True)]
        )

    out = [line(head), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    return "\n".join(out + [line(row) for row in rows])


def machine() -> str:
    """Cores, CPU model, Python and the load when the measurement started (shared machine?)."""
    cpu = platform.machine()
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}, "
        f"load average {START_LOAD:.1f} at the start"
    )


def stamp(command: str, elapsed_s: float) -> str:
    """The line under each section's heading: when, where, what command, how long."""
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() - elapsed_s))
    return (
        f"Measured {started} on {machine()}, in one run of `{command}` ({elapsed_s / 60:.1f} min)."
    )


def command_line() -> str:
    """How this script was invoked, relative to the repository."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``doc``.

    A missing section is appended at the end (so a new benchmark can be run before the doc
    mentions it); every other byte of the document is kept.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Performance\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text, encoding="utf-8")
