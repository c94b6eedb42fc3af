"""The paper case end to end: plain vs secure 2048-bit, and what pools and batching change.

Usage: ``python benchmarks/paper.py [--bits 2048] [--pool-rounds N] [--quick] [--write-docs]``

Runs configs/paper.toml with ``privgrid run`` (broker, LM, MO and one process per agent over
Mosquitto) once per variant, one after the other in one invocation:

- plain (sealed shares);
- secure, ZKP every round, no pools (the protocol as specified);
- secure with obfuscator/commitment pools (``privacy.pool_rounds``);
- secure with batch verification (``privacy.verify = "batch"``);
- secure with both, with the default (adaptive) steps and with the published constant steps
  (``steps = "fixed"``, τ = 1, α = 0.2, ρ = 1: 195 rounds instead of 72);
- secure, every round, with the heavy steps on 2 worker threads (``privacy.crypto_threads``),
  with all seven agents in one process (``--agents-per-process 7``), and with both.

Per variant: rounds; end-to-end wall (launcher start → exit); start-up (→ the MO's round 1);
offline precomputation (the agents' pool-filling CPU: before connecting, and the partner
pools completed when round 1 begins); the online clearing latency, round 1 → convergence
(the MO's clock), and the same without round 1 (which, with pools, holds the partner-pool
fill that long-lived keys would do between sessions); the median round; the stop → block
time (it holds the final batch check); per agent and round: crypto, maths, network +
waiting (the processes' own timings) and the CPU the process got (``/proc``); messages
and bytes per round; the online latency over plain's; and the negotiated result against
the centralised QP. Nothing is asserted; ``--write-docs`` rewrites the ``paper`` section of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.perfdoc import command_line, markdown_table, stamp, text_table, write_section
from benchmarks.scale import WireRun, run_wire
from privgrid.market.central import solve_central
from privgrid.market.negotiation import negotiate
from privgrid.market.setup import agent_costs, build_setup, played_costs
from privgrid.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "paper"
OFFLINE_PHASES = ("crypto_offline", "crypto_offline_start")


@dataclass
class Variant:
    """One row of the table: the privacy mode and the scenario overrides."""

    name: str
    mode: str  # plain | paillier
    privacy: dict[str, object]
    market: dict[str, object] = field(default_factory=dict)
    k: int = 1  # agents per OS process (``--agents-per-process``)


def variants(pool_rounds: int) -> list[Variant]:
    return [
        Variant("plain", "plain", {}),
        Variant("secure, every round", "paillier", {}),
        Variant(f"secure, pools ({pool_rounds} rounds)", "paillier", {"pool_rounds": pool_rounds}),
        Variant("secure, batch verify", "paillier", {"verify": "batch"}),
        Variant(
            "secure, pools + batch",
            "paillier",
            {"pool_rounds": pool_rounds, "verify": "batch"},
        ),
        Variant(
            "secure, pools + batch, published steps",
            "paillier",
            {"pool_rounds": pool_rounds, "verify": "batch"},
            {"steps": "fixed", "tau": 1.0, "alpha": 0.2, "rho": 1.0},
        ),
        Variant("secure, every round, 2 crypto threads", "paillier", {"crypto_threads": 2}),
        Variant("secure, every round, agents in 1 process", "paillier", {}, k=7),
        Variant(
            "secure, every round, agents in 1 process, 2 crypto threads",
            "paillier",
            {"crypto_threads": 2},
            k=7,
        ),
    ]


def trace_times(folder: str) -> list[float]:
    """Per-round durations from the run's trace.csv (elapsed at the end of each round)."""
    path = Path(folder) / "trace.csv"
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        elapsed = [float(row["elapsed_s"]) for row in csv.DictReader(handle)]
    return [b - a for a, b in zip([0.0, *elapsed], elapsed, strict=False)]


def figures(run: WireRun) -> dict[str, float]:
    """Everything a row shows, from the results, the trace and the /proc sampler."""
    r = run.results
    rounds = max(run.rounds, 1)
    timings = r.get("timings", {})
    agents = {
        pid: stats for pid, stats in r.get("participants", {}).items() if pid not in ("LM", "MO")
    }
    n = max(len(agents), 1)
    offline = sum(stats.get(p, 0.0) for stats in agents.values() for p in OFFLINE_PHASES)
    crypto = sum(stats.get("crypto_s", 0.0) for stats in agents.values()) - offline
    maths = sum(stats.get("compute_s", 0.0) for stats in agents.values())
    steps = trace_times(run.folder)
    negotiation = float(timings.get("negotiation_s") or math.nan)
    per_round = negotiation / rounds
    out = {
        "rounds": float(run.rounds),
        "wall": run.wall_s,
        "startup": run.startup_s,
        "offline": offline,
        "online": negotiation,
        "online_no_r1": negotiation - steps[0] if steps else math.nan,
        "round1": steps[0] if steps else math.nan,
        "median_round": statistics.median(steps[1:]) if len(steps) > 1 else math.nan,
        "finish": float(timings.get("finish_s") or math.nan),
        "crypto": 1000 * crypto / n / rounds,
        "maths": 1000 * maths / n / rounds,
        "cpu": 1000 * run.agent_cpu_s / n / rounds,
        "messages": float(r.get("messages", {}).get("per_round") or math.nan),
        "kbytes": float(r.get("messages", {}).get("bytes_per_round") or math.nan) / 1024,
        "gap": abs(float(r.get("welfare_gap") or math.nan)),
        "proofs": float(r.get("proofs", {}).get("verified", 0)),
    }
    out["waiting"] = max(0.0, 1000 * per_round - out["crypto"] - out["maths"])
    return out


def central_reference() -> dict[str, float]:
    """The centralised QP and the in-process negotiation of the same market, timed."""
    scenario = load_scenario(ROOT / "configs" / f"{CONFIG}.toml")
    setup = build_setup(scenario)
    costs, played = agent_costs(scenario), played_costs(scenario)
    solve_central(setup, costs)  # warm-up: the first call pays for the solver's imports
    started = time.perf_counter()
    central = solve_central(setup, costs)
    qp = time.perf_counter() - started
    started = time.perf_counter()
    result = negotiate(setup, played, welfare_costs=costs)
    inproc = time.perf_counter() - started
    welfare = result.trace[-1].welfare
    return {
        "qp_s": qp,
        "negotiate_s": inproc,
        "rounds": float(result.rounds),
        "gap": abs(welfare - central.welfare) / max(abs(central.welfare), 1e-12),
    }


def _f(value: float, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def table(rows: list[tuple[str, WireRun, dict[str, float]]]) -> tuple[list[str], list[list[str]]]:
    head = [
        "variant",
        "conv.",
        "rounds",
        "wall s",
        "start-up s",
        "offline s",
        "online s",
        "online w/o round 1 s",
        "median round ms",
        "stop→block s",
        "crypto ms",
        "maths ms",
        "network + waiting ms",
        "agent CPU ms",
        "msgs/round",
        "KB/round",
        "online ÷ plain",
        "welfare gap",
    ]
    plain = next((f["online"] for name, _, f in rows if name == "plain"), math.nan)
    out = []
    for name, run, f in rows:
        out.append(
            [
                name,
                "yes" if run.results.get("converged") else f"no (exit {run.exit})",
                f"{f['rounds']:.0f}",
                _f(f["wall"]),
                _f(f["startup"]),
                _f(f["offline"]),
                _f(f["online"]),
                _f(f["online_no_r1"]),
                _f(1000 * f["median_round"], 0),
                _f(f["finish"]),
                _f(f["crypto"]),
                _f(f["maths"], 2),
                _f(f["waiting"]),
                _f(f["cpu"]),
                _f(f["messages"], 0),
                _f(f["kbytes"], 0),
                _f(f["online"] / plain, 2),
                _f(f["gap"], 1) if math.isnan(f["gap"]) else f"{f['gap']:.1e}",
            ]
        )
    return head, out


def doc_section(
    rows: list[tuple[str, WireRun, dict[str, float]]],
    central: dict[str, float],
    bits: int,
    elapsed: float,
) -> str:
    head, body = table(rows)
    return "\n".join(
        [
            f"### The paper case: plain vs secure {bits}-bit (`benchmarks/paper.py`)",
            "",
            stamp(command_line(), elapsed),
            "",
            markdown_table(head, body),
            "",
            "- configs/paper.toml: 7 agents, 12 pairs (24 pair directions), one OS process per "
            "participant unless the row says *agents in 1 process* (`--agents-per-process 7`), "
            "Mosquitto on loopback; every secure row proves every decryption. *2 crypto "
            "threads*: `privacy.crypto_threads = 2`, the heavy steps on worker threads (their "
            "crypto time is summed over threads, so it may exceed the wall time).",
            "- **offline**: the agents' pool filling (seconds, summed over agents): own pools "
            "before connecting, partners' pools once their keys are in (in this one-session "
            "simulation, when round 1 begins, for at most 2 s per agent; the rest in idle "
            "time or on demand). **online**: "
            "the MO's round 1 → convergence; **online w/o round 1** leaves out round 1 (the "
            "clearing latency when the partner pools were filled between sessions, as with "
            "long-lived keys). **stop→block**: final reports (with the last batch check), "
            "block proposal and every vote.",
            "- Per agent and round, from the timings every process reports (results.json "
            "`participants`): **crypto** (time inside Paillier, proofs, signatures and sealing; "
            "the offline fill excluded), **maths** (the local step), **network + waiting** (the "
            "rest of the round: MQTT, the broker, and waiting for peers). These are wall-clock "
            "times, so on a loaded machine crypto includes time descheduled; **agent CPU** is "
            "the CPU the agent process actually got per round (from `/proc`, round 1 → stop).",
            f"- Centralised QP (`solve_central`): {central['qp_s'] * 1000:.0f} ms; the same "
            f"negotiation in one process (`negotiate`): {central['negotiate_s']:.2f} s, "
            f"{central['rounds']:.0f} rounds, welfare gap {central['gap']:.1e} — every row "
            "reproduces its rounds and result bit for bit.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048, help="Paillier key size")
    parser.add_argument("--pool-rounds", type=int, default=200, help="pool depth in rounds")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1024-bit keys, 3 rounds, 2 variants"
    )
    parser.add_argument("--skip", nargs="*", default=[], help="variants to leave out, by name")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs section")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    bits = 1024 if args.quick else args.bits
    plan = [v for v in variants(args.pool_rounds) if v.name.split(" (")[0] not in args.skip]
    quick: dict[str, object] = {}
    if args.quick:
        plan = [v for v in plan if v.name in ("plain", "secure, pools + batch")]
        quick = {"max_rounds": 3}
    started = time.perf_counter()
    central = central_reference()
    rows = []
    with tempfile.TemporaryDirectory(prefix="privgrid-paper-") as tmp:
        for variant in plan:
            privacy = dict(variant.privacy)
            if variant.mode != "plain" and bits < 2048:
                privacy["insecure_test_keys"] = True
            # Pools are filled before an agent connects (own key) and when round 1 begins
            # (partners' keys): give the start-up and the first round that time.
            timeouts = {"start": 600.0, "round": 600.0} if privacy.get("pool_rounds") else None
            run = run_wire(
                CONFIG,
                variant.mode,
                bits if variant.mode != "plain" else None,
                variant.k,
                Path(tmp),
                privacy=privacy,
                market={**variant.market, **quick},
                tag=variant.name,
                timeouts=timeouts,
            )
            rows.append((variant.name, run, figures(run)))
    head, body = table(rows)
    print(text_table(head, body))
    print(
        f"centralised QP {central['qp_s'] * 1000:.0f} ms; in process {central['negotiate_s']:.2f}"
        f" s, {central['rounds']:.0f} rounds, welfare gap {central['gap']:.1e}"
    )
    if args.json:
        raw = [{"variant": name, **f} for name, _, f in rows]
        args.json.write_text(json.dumps({"rows": raw, "central": central}, indent=1))
    if args.write_docs:
        elapsed = time.perf_counter() - started
        write_section("paper", doc_section(rows, central, bits, elapsed))
        print("wrote the paper section of docs/performance.md")


if __name__ == "__main__":
    main()
