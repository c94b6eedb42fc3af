"""Wire benchmark: plain negotiation over a real broker vs in process, and where the CPU goes.

For each scenario (default: paper.toml and ieee30-40.toml) and each broker (default: Mosquitto
and the embedded broker, reported separately), one plain-mode grid of real processes, side by
side with ``privgrid solve``'s in-process negotiation of the same scenario in the same
invocation: rounds, negotiation time (the MO's clock, round 1 → stop), time per round, the
ratio wire ÷ in process, messages per round, and the CPU every kind of process got per round
(from ``/proc``, round 1 → stop). On Mosquitto a probe client also measures the broker's
publish→receive latency during the run.

``--profile`` adds a second run per scenario (Mosquitto) with every process under cProfile
(``PRIVGRID_PROFILE``, CPU time) and splits each role's CPU into components — paho-mqtt,
asyncio, signatures, sealing, msgpack, the channel's checks, the market maths … — given per
message the role sent or received: the profiler's shares applied to the unprofiled run's CPU.
Nothing is asserted. ``--write-docs`` rewrites the ``wire`` section of docs/performance.md.

    python benchmarks/wire.py [--scenarios configs/paper.toml …] [--brokers mosquitto embedded]
                              [--profile] [--write-docs] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import aiomqtt
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
from benchmarks.scale import Sampler  # noqa: E402
from privgrid.keys import participants  # noqa: E402
from privgrid.market.negotiation import negotiate  # noqa: E402
from privgrid.market.setup import agent_costs, build_setup  # noqa: E402
from privgrid.process import ENV_PROFILE  # noqa: E402
from privgrid.scenario import MO_ID, load_scenario  # noqa: E402
from privgrid.wire.session import NO_DELAY, BrokerUrl  # noqa: E402
from tests.grid_harness import INTRUDER, make_grid  # noqa: E402

DEFAULT_SCENARIOS = [ROOT / "configs" / "paper.toml", ROOT / "configs" / "ieee30-40.toml"]
ROLES = ("agents", "LM", "MO", "broker")


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
                    seq = int(bytes(message.payload)[:10])  # type: ignore[arg-type]
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

    def median_ms(self) -> float:
        return 1000 * statistics.median(self.samples) if self.samples else float("nan")


def run_grid(
    scenario: Path, broker: str, folder: Path, profile: Path | None = None
) -> dict[str, Any]:
    """One plain grid of real processes; its results, CPU per role and round, latency."""
    mosquitto = broker == "mosquitto"
    grid = make_grid(folder, scenario, intruder=mosquitto, broker=broker, privacy={"mode": "plain"})
    probe = Probe(grid.url(INTRUDER), grid.run) if mosquitto and profile is None else None
    thread = threading.Thread(target=probe.run, daemon=True) if probe else None
    sampler = Sampler(os.getpid(), folder / "logs" / "MO.log", period=0.05)
    if profile is not None:
        os.environ[ENV_PROFILE] = str(profile)
    try:
        sampler.start()
        if thread:
            thread.start()
        grid.start_all()
        code = grid.wait(MO_ID, timeout=3600)
        for pid in participants(grid.scenario):
            grid.wait(pid, timeout=60)
    finally:
        os.environ.pop(ENV_PROFILE, None)
        sampler.done.set()
        sampler.join()
        if probe and thread:
            probe.stop.set()
            thread.join(timeout=5)
        grid.stop()
    results = grid.results()
    cpu: dict[str, float] = collections.defaultdict(float)
    for proc in sampler.procs.values():
        if proc.cpu_at_round_one is not None and proc.role in ROLES:
            end = proc.cpu_at_stop if proc.cpu_at_stop is not None else proc.cpu_s
            cpu[proc.role] += end - proc.cpu_at_round_one
    counts = {
        pid: stats["sent"] + stats["received"]
        for pid, stats in results.get("participants", {}).items()
    }
    return {
        "exit": code,
        "results": results,
        "cpu": dict(cpu),
        "latency_ms": probe.median_ms() if probe else float("nan"),
        "messages": counts,
    }


# --- the profile: components of a role's CPU ---------------------------------------------------
COMPONENTS = (
    ("signatures (Ed25519)", lambda f, n: "ed25519" in n or "crypto_sign" in n or "/nacl/" in f),
    ("sealing (X25519, ChaCha20)", lambda f, n: "x25519" in n or "chacha" in n.lower()),
    ("sealing (X25519, ChaCha20)", lambda f, n: "sealing.py" in f or "framing.py" in f),
    ("msgpack", lambda f, n: "msgpack" in f or "msgpack" in n),
    ("paho-mqtt", lambda f, n: "/paho/" in f),
    ("aiomqtt", lambda f, n: "/aiomqtt/" in f),
    ("socket system calls", lambda f, n: "socket" in n),
    ("asyncio event loop", lambda f, n: "/asyncio/" in f or "selectors" in f or "epoll" in n),
    ("logging", lambda f, n: "/logging/" in f or "privgrid/logs.py" in f),
    ("channel, envelope, schema", lambda f, n: "privgrid/wire/" in f),
    ("market maths (numpy)", lambda f, n: "privgrid/market" in f or "numpy" in f + n),
    ("runtime, membership", lambda f, n: any(x in f for x in ("runtime.py", "membership.py"))),
    ("role logic", lambda f, n: "privgrid/roles" in f or "privgrid/privacy" in f),
)


def component(filename: str, name: str) -> str:
    for label, test in COMPONENTS:
        if test(filename, name):
            return label
    return "other (builtins, dataclasses, …)"


def profile_shares(folder: Path) -> dict[str, dict[str, float]]:
    """Per role (agent, LM, MO): each component's share of the profiled CPU."""
    shares: dict[str, dict[str, float]] = {}
    totals: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for path in folder.glob("*.prof"):
        role = path.stem if path.stem in ("LM", "MO") else "agents"
        for (filename, _, name), (*_, tottime, _cum, _callers) in pstats.Stats(
            str(path)
        ).stats.items():  # type: ignore[attr-defined]
            totals[role][component(filename, name)] += tottime
    for role, counter in totals.items():
        whole = sum(counter.values()) or 1.0
        shares[role] = {label: value / whole for label, value in counter.items()}
    return shares


def per_message_us(run: dict[str, Any], role: str) -> float:
    """The role's CPU (round 1 → stop, unprofiled) per message it sent or received."""
    ids = [p for p in run["messages"] if p == role or (role == "agents" and p not in ("LM", "MO"))]
    handled = sum(run["messages"][p] for p in ids)
    return 1e6 * run["cpu"].get(role, 0.0) / handled if handled else float("nan")


# --- tables -------------------------------------------------------------------------------------
RUN_HEAD = [
    "scenario",
    "broker",
    "rounds",
    "negotiation s",
    "ms / round",
    "in process ms / round",
    "wire ÷ in process",
    "messages / round",
    "CPU ms / round: agents",
    "LM",
    "MO",
    "broker",
    "broker latency ms",
]


def run_row(name: str, broker: str, run: dict[str, Any], solved_s: float, rounds: int) -> list:
    res = run["results"]
    per_round = 1000 * res["timings"]["per_round_s"]
    inproc = 1000 * solved_s / rounds
    cpu = {r: 1000 * run["cpu"].get(r, float("nan")) / res["rounds"] for r in ROLES}
    ok = "" if run["exit"] == 0 and res.get("converged") else f" (exit {run['exit']})"
    return [
        name,
        broker,
        f"{res['rounds']}{ok}",
        f"{res['timings']['negotiation_s']:.2f}",
        f"{per_round:.1f}",
        f"{inproc:.2f}",
        f"{per_round / inproc:.0f} ×",
        f"{res['messages']['per_round']:.0f}",
        *(f"{cpu[r]:.1f}" for r in ROLES),
        "–" if run["latency_ms"] != run["latency_ms"] else f"{run['latency_ms']:.2f}",
    ]


def profile_rows(
    name: str, run: dict[str, Any], shares: dict[str, dict[str, float]]
) -> tuple[list[str], list[list[str]]]:
    roles = [r for r in ("agents", "LM", "MO") if r in shares]
    head = ["component (µs CPU per message sent or received)", *roles]
    us = {r: per_message_us(run, r) for r in roles}
    labels = sorted(
        {label for r in roles for label in shares[r]},
        key=lambda label: -shares.get("agents", {}).get(label, 0.0),
    )
    rows = [
        [label, *(f"{shares[r].get(label, 0.0) * us[r]:.0f}" for r in roles)] for label in labels
    ]
    rows.append(["**all**", *(f"**{us[r]:.0f}**" for r in roles)])
    return head, rows


def quick_scenario(folder: Path) -> Path:
    """paper-unconstrained.toml stopped after 10 rounds: the smoke test's tiny run."""
    data = tomllib.loads((ROOT / "configs" / "paper-unconstrained.toml").read_text())
    data.setdefault("market", {})["max_rounds"] = 10
    path = folder / "quick.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=Path, nargs="+", default=DEFAULT_SCENARIOS)
    parser.add_argument(
        "--brokers", nargs="+", default=["mosquitto", "embedded"], choices=["mosquitto", "embedded"]
    )
    parser.add_argument("--profile", action="store_true", help="also profile a Mosquitto run")
    parser.add_argument("--quick", action="store_true", help="smoke test: one tiny scenario")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    began = time.perf_counter()
    rows: list[list[str]] = []
    profiles: list[tuple[str, list[str], list[list[str]]]] = []
    with tempfile.TemporaryDirectory(prefix="privgrid-wire-bench-") as tmp:
        scenarios = [quick_scenario(Path(tmp))] if args.quick else args.scenarios
        for path in scenarios:
            scenario = load_scenario(path)
            setup, costs = build_setup(scenario), agent_costs(scenario)
            solved_s, solved = float("inf"), None
            for _ in range(3):  # the best of three: in process, a few ms of noise matter
                started = time.perf_counter()
                solved = negotiate(setup, costs)
                solved_s = min(solved_s, time.perf_counter() - started)
            assert solved is not None
            mosquitto_run = None
            for broker in args.brokers:
                folder = Path(tmp) / f"{scenario.name}-{broker}"
                run = run_grid(path, broker, folder)
                print(f"{scenario.name} over {broker}: exit {run['exit']}", file=sys.stderr)
                rows.append(run_row(scenario.name, broker, run, solved_s, solved.rounds))
                mosquitto_run = run if broker == "mosquitto" else mosquitto_run
            if args.profile and mosquitto_run is not None:
                prof = Path(tmp) / f"{scenario.name}-profile"
                prof.mkdir()
                run_grid(path, "mosquitto", Path(tmp) / f"{scenario.name}-profiled", prof)
                head, prows = profile_rows(scenario.name, mosquitto_run, profile_shares(prof))
                profiles.append((scenario.name, head, prows))
    print(text_table(RUN_HEAD, rows))
    for name, head, prows in profiles:
        print(f"\n{name}: CPU per message by component (profiled run's shares × measured CPU)")
        print(text_table(head, prows))
    if args.write_docs:
        elapsed = time.perf_counter() - began
        parts = [
            "### Over the wire vs in process (plain mode)",
            stamp(command_line(), elapsed),
            "Real processes over a real broker, plain mode; the in-process time is "
            "`privgrid solve`'s negotiation (best of three) in the same invocation. CPU per "
            "round: what each kind of process got from the kernel, round 1 → stop, summed "
            "over its processes.",
            markdown_table(RUN_HEAD, rows),
        ]
        for name, head, prows in profiles:
            parts += [
                f"**Where a participant's CPU goes, {name}** (Mosquitto; µs of CPU per "
                "message the role sent or received: the shares of a cProfile'd run applied "
                "to the unprofiled run's CPU):",
                markdown_table(head, prows),
            ]
        write_section("wire", "\n\n".join(parts))


if __name__ == "__main__":
    main()
