"""Scale benchmark: IEEE 30 / 118 scenarios with 40–500 agents over a real Mosquitto.

Each run is ``privgrid run SCENARIO --json`` (the real launcher: broker, LM, MO, agents as OS
processes, ``--agents-per-process K``), with a sampler reading ``/proc`` of every process the
launcher started: peak RSS (VmHWM) and CPU (utime + stime). The MO's log marks the start of
round 1 and the stop, so start-up and negotiation CPU are told apart. Per run: agents, pairs,
rounds, end-to-end wall, start-up, time per round, agents' CPU per pair-direction per round
(all agent processes' CPU during the negotiation / (rounds × 2 × pairs): maths, crypto, MQTT
and envelopes together), memory per agent process (max and median of the processes' peaks)
and per agent. Then the cost per round against the number of pairs, with a least-squares line
(slope, intercept, R²) per mode. Rounds with ρ = 1.0 vs 1.5 are ``benchmarks/rho.py``.

Nothing is asserted: the numbers are reported. Secure runs of the large cases use 1024-bit
Paillier keys (``insecure_test_keys``) and say so in the table.

    python benchmarks/scale.py                      # the default plan (long: tens of minutes)
    python benchmarks/scale.py --plain paper --secure paper:2048
    python benchmarks/scale.py --quick              # smoke test: paper, a few rounds
    python benchmarks/scale.py --write-docs         # also rewrite docs/performance.md's section
    python benchmarks/scale.py --plain ieee30-40 --merge old.json   # re-measure some rows only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
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
from privgrid.launcher import effective_scenario  # noqa: E402
from privgrid.scenario import load_scenario  # noqa: E402

CONFIGS = ROOT / "configs"
DEFAULT_PLAIN = ["paper", "ieee30-40", "ieee118-100-nearest", "ieee118-500"]
DEFAULT_SECURE = ["paper:1024", "ieee30-40:1024", "ieee118-100-nearest:1024"]
TICK = os.sysconf("SC_CLK_TCK")
ROUND_ONE = "starting round 1"
STOPPED = "stopping after round"


# --- sampling the processes of a run ------------------------------------------------------------


@dataclass
class Proc:
    """What the sampler learnt about one process of the run."""

    pid: int
    role: str  # agents | LM | MO | broker | launcher
    agents: int  # agents hosted (0 for the others)
    peak_rss_kb: int = 0
    cpu_s: float = 0.0  # last seen utime + stime
    cpu_at_round_one: float | None = None
    cpu_at_stop: float | None = None


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(
    root: int, kind_of: Callable[[int], tuple[str, int] | None]
) -> list[tuple[int, tuple[str, int] | None]]:
    """The launcher's process tree with each process's kind, without the children of role
    processes: those are the short-lived feasibility checks forked at start
    (privgrid.process), not participants."""
    tree, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        kind = kind_of(pid)
        out.append((pid, kind))
        if kind is None or kind[0] not in ("agents", "LM", "MO"):
            todo += tree.get(pid, [])
    return out


def _classify(pid: int) -> tuple[str, int] | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in argv]
    # ``python -m agents`` (the role folders) or ``-m privgrid.roles.agent`` (the launcher's)
    if {"agents", "privgrid.roles.agent"} & set(words):
        return "agents", words.count("--id")
    if {"line_manager", "privgrid.roles.line_manager"} & set(words):
        return "LM", 0
    if {"market_operator", "privgrid.roles.market_operator"} & set(words):
        return "MO", 0
    if any("mosquitto" in w or "amqtt" in w or "broker" in w for w in words[:3]):
        return "broker", 0
    return "launcher", 0


def _read(pid: int) -> tuple[int, float] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    hwm = re.search(r"VmHWM:\s+(\d+)", status)
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return (int(hwm.group(1)) if hwm else 0), cpu


class Sampler(threading.Thread):
    """Polls every process under the launcher, and the MO's log for round 1 and the stop."""

    def __init__(self, root: int, mo_log: Path, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.mo_log, self.period = root, mo_log, period
        self.procs: dict[int, Proc] = {}
        self.round_one_at: float | None = None
        self.stopped_at: float | None = None
        self.done = threading.Event()

    def _marks(self) -> tuple[bool, bool]:
        try:
            text = self.mo_log.read_text(errors="replace")
        except OSError:
            return False, False
        return ROUND_ONE in text, STOPPED in text

    def _kind(self, pid: int) -> tuple[str, int] | None:
        """A known process's kind without reading /proc again — except one seen as the
        launcher that is not the root: caught between fork and exec, it still had the
        parent's command line, and would hide a participant's CPU under the launcher's."""
        proc = self.procs.get(pid)
        if proc is not None and (proc.role != "launcher" or pid == self.root):
            return proc.role, proc.agents
        return _classify(pid)

    def sample(self) -> None:
        for pid, kind in _descendants(self.root, self._kind):
            if kind is None:
                continue
            proc = self.procs.get(pid)
            if proc is None or proc.role != kind[0]:
                proc = self.procs[pid] = Proc(pid, *kind)
            read = _read(pid)
            if read is None:
                continue
            proc.peak_rss_kb = max(proc.peak_rss_kb, read[0])
            proc.cpu_s = read[1]
        one, stop = self._marks()
        now = time.perf_counter()
        if one and self.round_one_at is None:
            self.round_one_at = now
            for p in self.procs.values():
                p.cpu_at_round_one = p.cpu_s
        if stop and self.stopped_at is None:
            self.stopped_at = now
            for p in self.procs.values():
                p.cpu_at_stop = p.cpu_s

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            time.sleep(self.period)


# --- one run over the wire ----------------------------------------------------------------------


@dataclass
class WireRun:
    config: str
    mode: str
    key_bits: int | None
    agents: int
    pairs: int
    k: int  # agents per process
    tag: str = ""  # what the privacy overrides change (shown in the mode column)
    folder: str = ""  # the run folder (results.json, trace.csv, logs/)
    exit: int = -1
    results: dict[str, Any] = field(default_factory=dict)
    wall_s: float = math.nan
    startup_s: float = math.nan
    agent_cpu_s: float = math.nan  # all agent processes, round 1 → stop
    rss_mb: list[float] = field(default_factory=list)  # peak of each agent process
    lm_mb: float = math.nan
    mo_mb: float = math.nan

    @property
    def rounds(self) -> int:
        return int(self.results.get("rounds", 0))

    @property
    def per_round_s(self) -> float:
        return float(self.results.get("timings", {}).get("per_round_s", math.nan))

    @property
    def cpu_per_direction_ms(self) -> float:
        if not self.rounds:
            return math.nan
        return 1000 * self.agent_cpu_s / (self.rounds * 2 * self.pairs)

    @property
    def label(self) -> str:
        if self.mode == "plain":
            return "plain"
        note = " (insecure test size)" if (self.key_bits or 2048) < 2048 else ""
        tag = f", {self.tag}" if self.tag else ""
        return f"secure {self.key_bits}-bit{tag}{note}"


def supports_agents_per_process() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "privgrid.cli", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "--agents-per-process" in out.stdout


def auto_k(agents: int) -> int:
    """About 20 agent processes at most: 100 agents → 5 per process, 500 → 25."""
    return max(1, math.ceil(agents / 20)) if agents > 40 else 1


def scenario_file(
    config: str,
    mode: str,
    key_bits: int | None,
    folder: Path,
    privacy: dict[str, Any] | None = None,
    market: dict[str, Any] | None = None,
    name: str = "",
    timeouts: dict[str, Any] | None = None,
) -> Path:
    """The scenario of this run: its mode, key size (secure runs) and any overrides."""
    scenario = load_scenario(CONFIGS / f"{config}.toml")
    data = effective_scenario(scenario, mode if mode == "plain" else "paillier")
    if mode != "plain":
        section = data.setdefault("privacy", {})
        section["key_bits"] = key_bits or 2048
        if (key_bits or 2048) < 2048:
            section["insecure_test_keys"] = True
        section.update(privacy or {})
    data.setdefault("market", {}).update(market or {})
    data.setdefault("timeouts", {}).update(timeouts or {})
    path = folder / f"{name or config + '-' + mode}.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def run_wire(
    config: str,
    mode: str,
    key_bits: int | None,
    k: int | None,
    folder: Path,
    *,
    privacy: dict[str, Any] | None = None,
    market: dict[str, Any] | None = None,
    tag: str = "",
    timeout: float | None = None,
    timeouts: dict[str, Any] | None = None,
) -> WireRun:
    """One ``privgrid run`` of ``config``, sampled; ``k``: None → 1, 0 → :func:`auto_k`.

    A run still going after ``timeout`` seconds is interrupted (reported, not converged)."""
    scenario = load_scenario(CONFIGS / f"{config}.toml")
    n, pairs = len(scenario.agents), len(scenario.pairs)
    k = 1 if k is None else (auto_k(n) if k == 0 else k)
    run = WireRun(config, mode, key_bits, n, pairs, k, tag)
    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{config}-{mode}-{key_bits}-{tag}").strip("-")
    out = folder / f"run-{name}"
    run.folder = str(out)
    cmd = [
        sys.executable,
        "-m",
        "privgrid.cli",
        "run",
        str(scenario_file(config, mode, key_bits, folder, privacy, market, name, timeouts)),
        "--json",
        "--out",
        str(out),
    ]
    if k > 1:
        cmd += ["--agents-per-process", str(k)]
    print(f"{config} {run.label}: {n} agents, {pairs} pairs, K = {k} …", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    sampler = Sampler(process.pid, out / "logs" / "MO.log")
    sampler.start()
    try:
        stdout, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # Ctrl-C semantics: the launcher stops every child
        print(f"  no result within {timeout:g} s: interrupting the run", flush=True)
        process.send_signal(signal.SIGINT)
        try:
            stdout, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, _ = process.communicate()
    run.wall_s = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    run.exit = process.returncode
    try:
        run.results = json.loads(stdout)
    except json.JSONDecodeError:
        results = out / "results.json"
        run.results = json.loads(results.read_text()) if results.exists() else {}
    if sampler.round_one_at is not None:
        run.startup_s = sampler.round_one_at - started
    agents = [p for p in sampler.procs.values() if p.role == "agents"]
    run.rss_mb = [p.peak_rss_kb / 1024 for p in agents]
    if sampler.round_one_at is not None:
        run.agent_cpu_s = sum(
            (p.cpu_at_stop if p.cpu_at_stop is not None else p.cpu_s) - (p.cpu_at_round_one or 0)
            for p in agents
        )
    for role in ("LM", "MO"):
        peaks = [p.peak_rss_kb / 1024 for p in sampler.procs.values() if p.role == role]
        setattr(run, f"{role.lower()}_mb", max(peaks, default=math.nan))
    print(
        f"  exit {run.exit}, converged {run.results.get('converged')}, {run.rounds} rounds, "
        f"{run.wall_s:.1f} s, RSS max {max(run.rss_mb, default=math.nan):.1f} MB",
        flush=True,
    )
    return run


# --- the fit and the tables ---------------------------------------------------------------------


def linear_fit(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = slope·x + intercept``; R² (1 for two points, by construction)."""
    X, Y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(X, Y, 1)
    residual = float(np.sum((Y - (slope * X + intercept)) ** 2))
    total = float(np.sum((Y - Y.mean()) ** 2))
    return float(slope), float(intercept), (1.0 - residual / total) if total > 0 else 1.0


def _f(value: float, digits: int = 1) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def wire_rows(runs: list[WireRun]) -> tuple[list[str], list[list[str]]]:
    head = [
        "scenario",
        "mode",
        "agents",
        "pairs",
        "K",
        "procs",
        "conv.",
        "rounds",
        "wall s",
        "start-up s",
        "ms/round",
        "CPU ms/pair-dir/round",
        "RSS MB/proc max",
        "median",
        "MB/agent",
        "LM MB",
        "MO MB",
    ]
    rows = []
    for r in runs:
        rss = r.rss_mb or [math.nan]
        conv = r.results.get("converged")
        rows.append(
            [
                r.config,
                r.label,
                str(r.agents),
                str(r.pairs),
                str(r.k),
                str(len(r.rss_mb)),
                ("yes" if conv else f"no (exit {r.exit})") if r.results else f"exit {r.exit}",
                str(r.rounds),
                _f(r.wall_s),
                _f(r.startup_s),
                _f(1000 * r.per_round_s),
                _f(r.cpu_per_direction_ms, 2),
                _f(max(rss)),
                _f(statistics.median(rss)),
                _f(statistics.median(rss) / r.k),
                _f(r.lm_mb),
                _f(r.mo_mb),
            ]
        )
    return head, rows


def fit_rows(runs: list[WireRun]) -> tuple[list[str], list[list[str]]]:
    head = ["mode", "runs", "y", "slope per pair", "intercept", "R²"]
    rows = []
    groups: dict[str, list[WireRun]] = {}
    for r in runs:
        if r.results.get("converged") and r.rounds:
            groups.setdefault(r.label, []).append(r)
    for label, group in groups.items():
        if len({r.pairs for r in group}) < 2:
            continue
        x = [float(r.pairs) for r in group]
        names = ", ".join(r.config for r in group)
        for what, y, unit in (
            ("wall per round", [1000 * r.per_round_s for r in group], "ms"),
            ("agent CPU per round", [1000 * r.agent_cpu_s / r.rounds for r in group], "ms"),
        ):
            slope, intercept, r2 = linear_fit(x, y)
            rows.append(
                [
                    label,
                    f"{len(group)} ({names})",
                    f"{what} ({unit})",
                    f"{slope:.3f} {unit}",
                    f"{intercept:.1f} {unit}",
                    f"{r2:.3f}" + (" (2 points)" if len(group) == 2 else ""),
                ]
            )
    return head, rows


def doc_section(wire: list[WireRun], k_note: str, elapsed: float) -> str:
    head, rows = wire_rows(wire)
    parts = [
        "### Scale: IEEE 30 / 118 with 40–500 agents (`benchmarks/scale.py`)",
        "",
        stamp(command_line(), elapsed),
        "",
        markdown_table(head, rows),
        "",
        "- **K**: agents per OS process (`--agents-per-process`); **procs**: agent processes. "
        + k_note,
        "- **wall**: launcher start → exit (keys, broker, start-up, negotiation, ledger vote); "
        "**start-up**: launcher start → the MO starts round 1; **ms/round**: the MO's "
        "negotiation time / rounds.",
        "- **CPU ms/pair-dir/round**: CPU of all agent processes between round 1 and the stop "
        "(from `/proc`) / (rounds × 2 × pairs): maths, crypto, MQTT, signatures and sealing "
        "together.",
        "- **RSS**: peak resident memory (VmHWM) of each agent process: the largest and the "
        "median; **MB/agent** = median / K. Target: ≤ 80 MB per agent process.",
        "- Secure runs marked *insecure test size* use 1024-bit Paillier keys "
        "(`insecure_test_keys`), for the large cases only.",
    ]
    head, rows = fit_rows(wire)
    if rows:
        parts += [
            "",
            "Cost per round against the number of pairs (least squares over the converged runs "
            "of one mode):",
            "",
            markdown_table(head, rows),
        ]
    return "\n".join(parts)


def load_runs(path: Path) -> list[WireRun]:
    """Runs written by an earlier ``--json``: the table and the fit need only these fields."""
    runs = []
    for raw in json.loads(path.read_text(encoding="utf-8")):
        names = {f.name for f in fields(WireRun)} - {"results"}
        run = WireRun(**{key: raw[key] for key in names if key in raw})
        run.results = {
            "rounds": raw["rounds"],
            "converged": raw["converged"],
            "timings": raw["timings"],
            "messages": raw["messages"],
        }
        runs.append(run)
    return runs


def merged(kept: list[WireRun], measured: list[WireRun]) -> list[WireRun]:
    """``kept`` without the runs measured again (same config, mode, key size and tag), then
    the new ones; the table sorts nothing, so smallest first as a run would."""
    key = lambda r: (r.config, r.mode, r.key_bits, r.tag)  # noqa: E731
    again = {key(r) for r in measured}
    runs = [r for r in kept if key(r) not in again] + measured
    return sorted(runs, key=lambda r: (r.agents, r.mode != "plain", r.key_bits or 0))


def parse_secure(items: list[str]) -> list[tuple[str, int]]:
    out = []
    for item in items:
        name, _, bits = item.partition(":")
        out.append((name, int(bits) if bits else 2048))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", nargs="*", default=DEFAULT_PLAIN, help="configs, plain mode")
    parser.add_argument(
        "--secure",
        nargs="*",
        default=DEFAULT_SECURE,
        help="configs in secure mode, as NAME[:BITS] (default 2048)",
    )
    parser.add_argument(
        "--verify",
        choices=["every_round", "batch"],
        help="privacy.verify of the secure runs (default: the scenario's)",
    )
    parser.add_argument(
        "--agents-per-process",
        type=int,
        default=0,
        help="K for every run; 0 (default): 1 up to 40 agents, else ⌈agents/20⌉",
    )
    parser.add_argument("--max-rounds", type=int, help="override market.max_rounds")
    parser.add_argument("--rho", type=float, help="override market.rho (benchmarks/rho.py)")
    parser.add_argument("--timeout", type=float, help="interrupt a run after this many s")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: paper plain and 1024-bit, 3 rounds"
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs section")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument(
        "--merge",
        type=Path,
        help="an earlier --json: its runs stay in the table unless measured again",
    )
    parser.add_argument(
        "--keep", type=Path, help="run folders (logs, results) here instead of a temporary one"
    )
    args = parser.parse_args()
    if args.quick:
        args.plain, args.secure, args.max_rounds = ["paper"], ["paper:1024"], 3
    started = time.perf_counter()
    k: int | None = args.agents_per_process
    if supports_agents_per_process():
        k_note = "K = 1 up to 40 agents, ⌈agents / 20⌉ above (about 20 agent processes)."
        if args.agents_per_process:
            k_note = f"K = {args.agents_per_process} for every run."
    else:
        k, k_note = None, "This launcher has no `--agents-per-process`: one process per agent."
    market: dict[str, Any] = {}
    if args.max_rounds:
        market["max_rounds"] = args.max_rounds
    if args.rho:
        market["rho"] = args.rho
        k_note += f" Every run with over-relaxation ρ = {args.rho:g} (`market.rho`)."
    privacy = {"verify": args.verify} if args.verify else None
    tag = "batch" if args.verify == "batch" else ""
    plan: list[tuple[str, str, int | None]] = [(c, "plain", None) for c in args.plain]
    plan += [(c, "paillier", bits) for c, bits in parse_secure(args.secure)]
    # Smallest first (agents, then plain before secure), so a long run cut short by the
    # deadline of the session leaves every smaller result in the table.
    plan.sort(key=lambda item: (len(load_scenario(CONFIGS / f"{item[0]}.toml").agents), item[1]))
    wire: list[WireRun] = []
    kept = load_runs(args.merge) if args.merge else []
    kept_note = ""
    if kept:
        again = {(c, m, b) for c, m, b in plan}
        old = [r for r in kept if (r.config, r.mode, r.key_bits) not in again]
        names = ", ".join(
            f"{r.config} {r.mode}" + (f" {r.key_bits}-bit" if r.key_bits else "") for r in old
        )
        kept_note = (
            f" Rows {names} are kept from an earlier run of this script (`--merge`), on the "
            "same machine with the same options."
        )
    keep = args.keep.resolve() if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="privgrid-scale-") as scratch:
        tmp = str(keep or scratch)
        for done, (config, mode, bits) in enumerate(plan, 1):
            secure = mode != "plain"
            wire.append(
                run_wire(
                    config,
                    mode,
                    bits,
                    k,
                    Path(tmp),
                    privacy=privacy if secure else None,
                    market=market,
                    tag=tag if secure else "",
                    timeout=args.timeout,
                )
            )
            if args.write_docs:  # after every run: an interrupted benchmark still reports
                note = "" if done == len(plan) else f" Partial: {done} of {len(plan)} runs."
                elapsed = time.perf_counter() - started
                table = merged(kept, wire)
                write_section("scale", doc_section(table, k_note + note + kept_note, elapsed))
    table = merged(kept, wire)
    print(text_table(*wire_rows(table)))
    head, rows = fit_rows(table)
    if rows:
        print("\nCost per round against pairs (linear fit)")
        print(text_table(head, rows))
    elapsed = time.perf_counter() - started
    if args.json:
        raw = [
            {
                **{key: v for key, v in r.__dict__.items() if key != "results"},
                "rounds": r.rounds,
                "per_round_s": r.per_round_s,
                "converged": r.results.get("converged"),
                "timings": r.results.get("timings"),
                "messages": r.results.get("messages"),
            }
            for r in wire
        ]
        args.json.write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    if args.write_docs:
        print("wrote the scale section of docs/performance.md")


if __name__ == "__main__":
    main()
