"""Wire benchmark: a grid over a real Mosquitto vs the in-process negotiation (prints a table).

For each privacy mode asked for (default: plain) on one scenario (default: the paper case):
rounds, end-to-end wall time (processes started → MO exited), negotiation wall time (round 1 →
stop), time per round, messages and bytes per round, the split of participants' time into
crypto / maths / waiting, the broker's publish→receive latency (median, p99) measured
*during* the run by a probe client on a side topic, and from it the split of a round into
crypto / maths / network (critical-path hops × median latency) / waiting for peers. Next to
it, ``privgrid solve``'s in-process negotiation time on the same machine in the same run.
Nothing is asserted.

    python benchmarks/wire.py [--scenario configs/paper.toml] [--modes plain paillier]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from privgrid.keys import participants  # noqa: E402
from privgrid.market.negotiation import negotiate  # noqa: E402
from privgrid.market.setup import agent_costs, build_setup  # noqa: E402
from privgrid.scenario import MO_ID, load_scenario  # noqa: E402
from privgrid.wire.session import NO_DELAY, BrokerUrl  # noqa: E402
from tests.grid_harness import INTRUDER, make_grid  # noqa: E402

#: Messages in sequence on a round's critical path, each one broker hop (publish → receive):
#: plain: round → share → price → residuals; paillier: round → c_A → c_B → price + proof →
#: residuals. The LM leg (trades → charges, two hops) runs alongside the pair exchange.
CRITICAL_HOPS = {"plain": 4, "paillier": 5}


def network_ms(run: dict[str, Any]) -> float:
    """The network's share of a round: its critical path's hops at the measured median
    publish→receive latency (an estimate: the processes share no clock with the broker)."""
    return CRITICAL_HOPS[run["mode"]] * run["latency_median_ms"]


def waiting_ms(run: dict[str, Any], participants_n: int) -> float:
    """What is left of a round once a participant's own crypto and maths and the network
    are taken out: waiting for peers' work."""
    timings, rounds = run["results"]["timings"], run["results"]["rounds"]
    own = (timings["crypto_s"] + timings["compute_s"]) / participants_n / rounds
    return max(0.0, 1000 * (timings["per_round_s"] - own) - network_ms(run))


class Probe:
    """Publishes a 1 kB message every 20 ms on a side topic and times its arrival."""

    def __init__(self, url: str, run: str) -> None:
        self.url = BrokerUrl.parse(url)
        self.topic = f"privgrid/{run}/probe/latency"
        self.samples: list[float] = []
        self.stop = threading.Event()

    async def _main(self) -> None:
        sent: dict[int, float] = {}
        async with aiomqtt.Client(
            self.url.host,
            self.url.port,
            username=INTRUDER,
            password=self.url.password,
            identifier="probe",
            socket_options=NO_DELAY,
        ) as c:
            await c.subscribe(self.topic, qos=1)

            async def receive() -> None:
                async for message in c.messages:
                    seq = int(bytes(message.payload)[:10])
                    if seq in sent:
                        self.samples.append(time.perf_counter() - sent.pop(seq))

            task = asyncio.create_task(receive())
            seq = 0
            while not self.stop.is_set():
                sent[seq] = time.perf_counter()
                await c.publish(self.topic, f"{seq:010d}".encode() + b"x" * 1014, qos=1)
                seq += 1
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            task.cancel()

    def run(self) -> None:
        asyncio.run(self._main())


def run_mode(scenario_path: Path, mode: str, folder: Path) -> dict[str, Any]:
    overrides: dict[str, Any] = {"privacy": {"mode": mode}}
    if mode == "paillier":
        overrides["privacy"].update({"key_bits": 2048})
    grid = make_grid(folder, scenario_path, intruder=True, **overrides)
    probe = Probe(grid.url(INTRUDER), grid.run)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    try:
        started = time.perf_counter()
        grid.start_all()
        code = grid.wait(MO_ID, timeout=3600)
        wall = time.perf_counter() - started
        for pid in participants(grid.scenario):
            grid.wait(pid, timeout=60)
    finally:
        probe.stop.set()
        thread.join(timeout=5)
        grid.stop()
    results = grid.results()
    samples = sorted(probe.samples) or [float("nan")]
    return {
        "mode": mode,
        "exit": code,
        "results": results,
        "wall_s": wall,
        "latency_median_ms": 1000 * statistics.median(samples),
        "latency_p99_ms": 1000 * samples[min(len(samples) - 1, int(0.99 * len(samples)))],
        "latency_samples": len(probe.samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=ROOT / "configs" / "paper.toml")
    parser.add_argument("--modes", nargs="+", default=["plain"], choices=["plain", "paillier"])
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    setup, costs = build_setup(scenario), agent_costs(scenario)
    started = time.perf_counter()
    solved = negotiate(setup, costs)
    solve_s = time.perf_counter() - started
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            runs.append(run_mode(args.scenario, mode, Path(tmp) / mode))
    table = Table(
        title=f"Wire benchmark: {scenario.name} ({setup.graph.n_agents} agents, "
        f"{len(setup.graph.pairs)} pairs)"
    )
    for col in ("", *(r["mode"] for r in runs), "in-process solve"):
        table.add_column(col, justify="right" if col else "left")

    def row(label: str, fn, solve_value: str = "") -> None:
        table.add_row(label, *(fn(r) for r in runs), solve_value)

    res = lambda r: r["results"]  # noqa: E731
    row("exit status / converged", lambda r: f"{r['exit']} / {res(r)['converged']}", "0 / True")
    row("rounds", lambda r: str(res(r)["rounds"]), str(solved.rounds))
    row("end-to-end wall s", lambda r: f"{r['wall_s']:.2f}")
    row(
        "negotiation wall s",
        lambda r: f"{res(r)['timings']['negotiation_s']:.2f}",
        f"{solve_s:.3f}",
    )
    row(
        "time per round ms",
        lambda r: f"{1000 * res(r)['timings']['per_round_s']:.1f}",
        f"{1000 * solve_s / solved.rounds:.2f}",
    )
    row("messages per round", lambda r: f"{res(r)['messages']['per_round']:.1f}")
    row("bytes per round", lambda r: f"{res(r)['messages']['bytes_per_round']:.0f}")
    n = len(participants(scenario))
    for key, label in (("crypto_s", "crypto"), ("compute_s", "maths"), ("wait_s", "waiting")):
        row(
            f"{label} ms per participant per round",
            lambda r, k=key: f"{1000 * res(r)['timings'][k] / n / res(r)['rounds']:.2f}",
        )
    row("publish→receive latency median ms", lambda r: f"{r['latency_median_ms']:.2f}")
    row("publish→receive latency p99 ms", lambda r: f"{r['latency_p99_ms']:.2f}")
    row("latency samples", lambda r: str(r["latency_samples"]))
    row("critical-path hops per round", lambda r: str(CRITICAL_HOPS[r["mode"]]))
    row(
        "network ms per round (hops × median latency)",
        lambda r: f"{network_ms(r):.2f}",
    )
    row(
        "waiting for peers ms per round (round − crypto − maths − network)",
        lambda r: f"{waiting_ms(r, n):.1f}",
    )
    if len(runs) == 2:
        ratio = (
            runs[1]["results"]["timings"]["negotiation_s"]
            / runs[0]["results"]["timings"]["negotiation_s"]
        )
        table.caption = f"{runs[1]['mode']}/{runs[0]['mode']} negotiation time: {ratio:.1f}×"
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
