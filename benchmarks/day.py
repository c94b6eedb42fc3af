"""A day on a feeder: the in-process day of each day config, cold vs warm rounds, targets.

Usage: ``python benchmarks/day.py [CONFIG …] [--intervals N] [--quick] [--write-docs]
[--wire [CONFIG …] [--privacy MODE] [--agents-per-process K]]``

Each day config (default: configs/day-rural1.toml and configs/day-semiurb4.toml, whole days)
is cleared in process as ``privgrid solve DAY.toml --out DIR`` does, with every interval also
negotiated cold (``measure_cold``) so warm and cold rounds are measured on the same markets.
The table gives the rounds (median and range), warm ÷ cold, whether every interval met the
targets (relative welfare gap ≤ 1e-4, no overload > 1e-3 kW), the AC check's largest error
and the wall time. Nothing is asserted; ``--write-docs`` rewrites the ``day`` section of
docs/performance.md. ``--quick``: two intervals of day-rural1 (the smoke test).

``--wire`` adds rows for the same days over the wire (only the configs it names, if any):
``privgrid run DAY.toml`` (Mosquitto, every participant a long-lived process,
``--agents-per-process K``, default 10) in the day's privacy mode or ``--privacy``, cold rounds
not measured (``measure_cold`` off: the wire row is the day as a user runs it). Its table gives
the rounds, whether each interval cleared the same trades as the in-process day (largest |ΔP|
in kW against the in-process row's run, and the largest relative welfare difference), messages
per round, the CPU per household per interval (crypto + compute, the participants' own figures)
and the wall time. For secure mode at 1024-bit test keys set ``privacy.insecure_test_keys =
true`` in the config. ``--quick --wire``: two intervals of day-rural1 in plain mode, both ways
(the smoke test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
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


def spread(values: list[int]) -> str:
    """``median (min–max)``, or – for none."""
    if not values:
        return "–"
    return f"{statistics.median(values):.0f} ({min(values)}–{max(values)})"


def day_file(path: Path, intervals: int | None, folder: Path, measure_cold: bool) -> Path:
    """A copy of the day config in ``folder`` with the first ``intervals`` intervals."""
    data = tomllib.loads(path.read_text())
    data["day"]["measure_cold"] = measure_cold
    if intervals is not None:
        data["day"]["intervals"] = intervals
    scenario = folder / f"{path.stem}{'' if measure_cold else '-wire'}.toml"
    scenario.write_text(tomli_w.dumps(data))
    return scenario


def bench(path: Path, intervals: int | None, folder: Path) -> list[str]:
    scenario = day_file(path, intervals, folder, measure_cold=True)
    started = time.perf_counter()
    prepared = prepare_day(scenario)
    document = run_day(prepared, folder / path.stem, plots=False)
    wall = time.perf_counter() - started
    rows = document["per_interval"]
    s = document["summary"]
    warm = [r["rounds"] for r in rows if r["warm"]]
    cold = [r["cold_rounds"] for r in rows if r["cold_rounds"] is not None]

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


WIRE_HEAD = [
    "day (feeder), over the wire",
    "mode",
    "processes",
    "converged / blocks",
    "rounds median (range)",
    "same trades as in process: max |ΔP| kW",
    "max rel. welfare difference",
    "messages per round",
    "CPU s per household per interval",
    "wall s",
    "s per interval",
]


def bench_wire(
    path: Path,
    intervals: int | None,
    folder: Path,
    reference: Path,
    privacy: str | None,
    per_process: int,
) -> list[str]:
    """``privgrid run`` of the day; ``reference``: the in-process run folder of the same day
    (its intervals' results are what the wire must reproduce)."""
    scenario = day_file(path, intervals, folder, measure_cold=False)
    out = folder / f"{path.stem}-wire"
    cmd = [sys.executable, "-m", "privgrid.cli", "run", str(scenario), "--out", str(out)]
    cmd += ["--agents-per-process", str(per_process), "--json"]
    if privacy is not None:
        cmd += ["--privacy", privacy]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        sys.exit(f"privgrid run {scenario} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    document = json.loads((out / "day.json").read_text())
    rows = document["per_interval"]
    s = document["summary"]
    households = {a["id"] for a in document["agents"] if a["kind"] == "household"}
    dp, dw, cpu, messages, rounds = 0.0, 0.0, [], 0, 0
    for row in rows:
        name = f"intervals/{row['index']:04d}/results.json"
        ours = json.loads((out / name).read_text())
        theirs = json.loads((reference / name).read_text())
        for a, b in zip(ours["trades"], theirs["trades"], strict=True):
            dp = max(dp, abs(a["power"] - b["power"]))
        w, w0 = ours["social_welfare"], theirs["social_welfare"]
        dw = max(dw, abs(w - w0) / max(abs(w0), 1e-12))
        parts = ours["participants"]
        cpu += [parts[h]["crypto_s"] + parts[h]["compute_s"] for h in households if h in parts]
        messages += ours["messages"]["sent"]
        rounds += ours["rounds"]
    homes = len(households)
    agents = homes + 2  # and the two grid agents
    processes = 2 + -(-agents // per_process)
    return [
        f"{document['scenario']} ({document['case'].removeprefix('simbench:')})",
        privacy or "the config's",
        str(processes),
        f"{s['converged']}/{s['intervals']} / {s['blocks']}",
        spread([r["rounds"] for r in rows]),
        f"{dp:.1e}",
        f"{dw:.1e}",
        f"{messages / max(rounds, 1):.0f}",
        f"{statistics.mean(cpu):.2f}" if cpu else "–",
        f"{wall:.0f}",
        f"{wall / max(len(rows), 1):.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", help="day scenarios [default: %(default)s]")
    parser.add_argument("--intervals", type=int, help="clear only the first N intervals")
    parser.add_argument("--quick", action="store_true", help="two intervals of day-rural1")
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/performance.md")
    parser.add_argument(
        "--wire",
        nargs="*",
        metavar="CONFIG",
        help="also over the wire: these of the configs (none named: all)",
    )
    parser.add_argument("--privacy", choices=["plain", "paillier"], help="the wire's mode")
    parser.add_argument("--agents-per-process", type=int, default=10, help="on the wire")
    args = parser.parse_args()
    configs = args.configs or (["configs/day-rural1.toml"] if args.quick else DEFAULT)
    intervals = 2 if args.quick else args.intervals
    privacy = "plain" if args.quick and args.privacy is None else args.privacy
    started = time.perf_counter()
    rows, wire_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            rows.append(bench(ROOT / config, intervals, Path(tmp)))
            print(text_table(HEAD, rows[-1:]), flush=True)
            if args.wire is not None and (not args.wire or config in args.wire):
                reference = Path(tmp) / Path(config).stem
                wire = bench_wire(
                    ROOT / config, intervals, Path(tmp), reference, privacy, args.agents_per_process
                )
                wire_rows.append(wire)
                print(text_table(WIRE_HEAD, wire_rows[-1:]), flush=True)
    print()
    print(text_table(HEAD, rows))
    if wire_rows:
        print()
        print(text_table(WIRE_HEAD, wire_rows))
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
                "the AC power flow and the ledger of every interval.",
                *(
                    [
                        "Over the wire (`--wire`): `privgrid run` of the same day, warm-started, "
                        "not measured cold; **max |ΔP|** and **max rel. welfare difference** "
                        "compare every interval with the in-process day's; **CPU** is each "
                        "household's own crypto + compute seconds, averaged.",
                        markdown_table(WIRE_HEAD, wire_rows),
                    ]
                    if wire_rows
                    else ["Over the wire: not measured (`python benchmarks/day.py --wire`)."]
                ),
            ]
        )
        write_section("day", body)


if __name__ == "__main__":
    main()
