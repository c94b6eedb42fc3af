"""A day on a feeder: the in-process day of each day config, cold vs warm rounds, targets.

Usage: ``python benchmarks/day.py [CONFIG …] [--intervals N] [--quick] [--write-docs]``

Each day config (default: configs/day-rural1.toml and configs/day-semiurb4.toml, whole days)
is cleared in process as ``privgrid solve DAY.toml --out DIR`` does, with every interval also
negotiated cold (``measure_cold``) so warm and cold rounds are measured on the same markets.
The table gives the rounds (median and range), warm ÷ cold, whether every interval met the
targets (relative welfare gap ≤ 1e-4, no overload > 1e-3 kW), the AC check's largest error
and the wall time. Nothing is asserted; ``--write-docs`` rewrites the ``day`` section of
docs/performance.md. ``--quick``: two intervals of day-rural1 (the smoke test).

TODO(wire, the lead's next stage): rows for the same day over the wire — ``privgrid run`` of
day-rural1 in plain mode (target ≤ 15 minutes on 2 cores), and secure mode on a few
intervals at 2048 bits and at 1024-bit test keys with the CPU per household per interval.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tomli_w

from benchmarks.perfdoc import command_line, markdown_table, stamp, text_table, write_section
from privgrid.feeder.day import prepare_day, run_day

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["configs/day-rural1.toml", "configs/day-semiurb4.toml"]


def bench(path: Path, intervals: int | None, folder: Path) -> list[str]:
    data = tomllib.loads(path.read_text())
    data["day"]["measure_cold"] = True
    if intervals is not None:
        data["day"]["intervals"] = intervals
    scenario = folder / f"{path.stem}.toml"
    scenario.write_text(tomli_w.dumps(data))
    started = time.perf_counter()
    prepared = prepare_day(scenario)
    document = run_day(prepared, folder / path.stem, plots=False)
    wall = time.perf_counter() - started
    rows = document["per_interval"]
    s = document["summary"]
    warm = [r["rounds"] for r in rows if r["warm"]]
    cold = [r["cold_rounds"] for r in rows if r["cold_rounds"] is not None]

    def spread(values: list[int]) -> str:
        if not values:
            return "–"
        return f"{statistics.median(values):.0f} ({min(values)}–{max(values)})"

    ratio = statistics.median(warm) / statistics.median(cold) if warm and cold else None
    homes = sum(a["kind"] == "household" for a in document["agents"])
    return [
        f"{document['scenario']} ({document['case'].removeprefix('simbench:')})",
        str(homes),
        str(len(document["pairs"])),
        f"{s['converged']}/{s['intervals']}",
        spread(cold),
        spread(warm),
        "–" if ratio is None else f"{ratio:.2f}",
        "yes" if s["within_targets"] else "NO",
        f"{s['max_welfare_gap']:.1e}",
        f"{s['max_overload_kw']:.1e}",
        f"{s['ac_max_flow_error_kw']:.2f}" if s["ac_max_flow_error_kw"] is not None else "–",
        f"{s['peak_loading_pct']:.0f}",
        f"{wall:.0f}",
        f"{wall / len(rows):.1f}",
    ]


HEAD = [
    "day (feeder)",
    "households",
    "pairs",
    "converged",
    "cold rounds median (range)",
    "warm rounds median (range)",
    "warm ÷ cold",
    "targets",
    "max gap",
    "max overload kW",
    "AC max |P−F| kW",
    "peak loading %",
    "wall s (with cold)",
    "s per interval",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", help="day scenarios [default: %(default)s]")
    parser.add_argument("--intervals", type=int, help="clear only the first N intervals")
    parser.add_argument("--quick", action="store_true", help="two intervals of day-rural1")
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/performance.md")
    args = parser.parse_args()
    configs = args.configs or (["configs/day-rural1.toml"] if args.quick else DEFAULT)
    intervals = 2 if args.quick else args.intervals
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            rows.append(bench(ROOT / config, intervals, Path(tmp)))
            print(text_table(HEAD, rows[-1:]), flush=True)
    print()
    print(text_table(HEAD, rows))
    if args.write_docs:
        body = "\n\n".join(
            [
                "### A day on a feeder, in process (`benchmarks/day.py`)",
                stamp(command_line(), time.perf_counter() - started),
                markdown_table(HEAD, rows),
                "Every interval is negotiated twice on the same market: warm (from the previous "
                "interval's cleared state, as `privgrid solve` clears a day) and cold (from "
                "round 0); the first interval has only a cold start. **targets**: every "
                "interval within 1e-4 relative welfare of the centralised optimum and no line "
                "over its limit by more than 1e-3 kW. **AC max |P−F|**: the largest difference "
                "between pandapower's AC branch flow and the DC flow over the day "
                "(docs/feeder.md). The wall time includes the cold negotiations, the central QP, "
                "the AC power flow and the ledger of every interval.\n\n"
                "Over the wire: not measured yet (`privgrid run` of a day is the next stage).",
            ]
        )
        write_section("day", body)


if __name__ == "__main__":
    main()
