"""Does watching slow the market? The same plain run with and without the live dashboard.

Usage: ``python benchmarks/dashboard.py [--scenario configs/paper.toml] [--repeat 3] [--quick]
[--write-docs]``

Runs the scenario with ``privgrid run --privacy plain`` (broker, LM, MO and one process per
agent over Mosquitto), alternating three variants, ``--repeat`` times each:

- **without** the dashboard;
- **with** ``--dashboard`` and nobody watching (the dashboard process: its broker
  subscription, signature checks, run folder polling);
- **with a page**: the same, and a client reading the page's event stream all along, as an
  open browser tab does (a page's own drawing happens in the browser, not here).

Per variant: rounds (the same in every variant: the arithmetic does not change), the
negotiation's wall time (the MO's clock, round 1 → stop) and time per round (medians over
the repeats), and the end-to-end wall time of ``privgrid run``. Nothing is asserted;
``--write-docs`` rewrites the ``dashboard`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.perfdoc import (  # noqa: E402
    command_line,
    markdown_table,
    stamp,
    text_table,
    write_section,
)
from privgrid.broker.local import free_port  # noqa: E402
from privgrid.launcher import LaunchOptions, launch  # noqa: E402

VARIANTS = ("without", "with", "with a page")


class PageReader:
    """Reads a dashboard's event stream in a thread, as an open page does, until told to stop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _read(self) -> None:
        while not self.done.is_set():
            try:
                with urllib.request.urlopen(self.url + "events", timeout=60) as stream:
                    for line in stream:
                        if line.startswith(b"event: "):
                            self.events += 1
                        if line.startswith(b"event: bye"):
                            return
            except OSError:
                time.sleep(0.05)  # not listening yet, or gone: the run decides

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def run_once(scenario: Path, variant: str, folder: Path) -> dict[str, Any]:
    port = free_port()
    options = LaunchOptions(
        scenario,
        privacy="plain",
        out=folder,
        quiet=True,
        dashboard=None if variant == "without" else f"127.0.0.1:{port}",
    )
    reader = PageReader(f"http://127.0.0.1:{port}/") if variant == "with a page" else None
    if reader is not None:
        reader.start()  # it connects as soon as the dashboard listens
    began = time.perf_counter()
    code, _, results = launch(options)
    wall = time.perf_counter() - began
    if reader is not None:
        reader.stop()
    timings = results.get("timings") or {}
    return {
        "variant": variant,
        "status": code,
        "rounds": results.get("rounds"),
        "negotiation_s": timings.get("negotiation_s"),
        "per_round_ms": 1000 * (timings.get("per_round_s") or float("nan")),
        "wall_s": wall,
        "events": reader.events if reader is not None else None,
    }


def summarise(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        rounds = sorted({r["rounds"] for r in mine})
        median = {k: statistics.median(r[k] for r in mine) for k in ("negotiation_s", "wall_s")}
        per_round = statistics.median(r["per_round_ms"] for r in mine)
        events = [r["events"] for r in mine if r["events"] is not None]
        rows.append(
            [
                variant,
                "/".join(str(r) for r in rounds),
                f"{median['negotiation_s']:.2f}",
                f"{per_round:.1f}",
                f"{median['wall_s']:.1f}",
                str(len(mine)),
                str(min(events)) if events else "—",
            ]
        )
    return rows


HEAD = [
    "dashboard",
    "rounds",
    "negotiation s (median)",
    "ms / round",
    "privgrid run wall s",
    "runs",
    "events read",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", type=Path, default=ROOT / "configs" / "paper.toml")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke test: 5 rounds, once each")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    began = time.perf_counter()
    scenario, repeat = args.scenario, args.repeat
    with tempfile.TemporaryDirectory(prefix="privgrid-dashboard-bench-") as scratch:
        if args.quick:
            data = tomllib.loads(scenario.read_text())
            data.setdefault("market", {})["max_rounds"] = 5
            scenario = Path(scratch) / "quick.toml"
            scenario.write_text(tomli_w.dumps(data))
            repeat = 1
        runs = []
        for i in range(repeat):  # interleaved, so a change of load hits every variant alike
            for variant in VARIANTS:
                folder = Path(scratch) / f"{i}-{variant.replace(' ', '-')}"
                runs.append(run_once(scenario, variant, folder))
                print(
                    f"{variant:>12}: run {i + 1}/{repeat}: {runs[-1]['rounds']} rounds, "
                    f"{runs[-1]['negotiation_s']:.2f} s negotiating",
                    file=sys.stderr,
                )
    rows = summarise(runs)
    print(text_table(HEAD, rows))
    if args.write_docs:
        elapsed = time.perf_counter() - began
        name = args.scenario.name
        body = "\n\n".join(
            [
                "### The live dashboard: with and without",
                stamp(command_line(), elapsed),
                f"`privgrid run {name} --privacy plain`, without `--dashboard`, with it, and "
                "with it and a client reading the page's event stream throughout (an open "
                "tab); interleaved runs, medians. The negotiation time is the MO's clock, "
                "round 1 → stop.",
                markdown_table(HEAD, rows),
            ]
        )
        write_section("dashboard", body)


if __name__ == "__main__":
    main()
