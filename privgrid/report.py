"""The run folder: ``results.json``, ``trace.csv`` and plots, from what the MO collected.

Two sources, kept apart:
- **the protocol**: the agents' and the LM's final reports (cleared trades, prices, charges,
  line prices, each party's own KKT checks, traffic counters) and the MO's residual trace;
- **the evaluator** (a simulation oracle, not a participant): it reads every agent's private
  cost from the scenario file to compute welfare and the centralised optimum, and replays the
  negotiation in one process to give ``trace.csv`` a welfare column and ``agents[].theta`` a
  value (as in ``privgrid solve``). The replay is used only if it reproduces the run's final
  trades bit for bit. Nothing it computes goes back to a participant.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privgrid.market.central import InfeasibleMarketError, solve_central
from privgrid.market.fixedpoint import decode
from privgrid.market.kkt import Check, Tolerances, check_pairs
from privgrid.market.line_step import LinePrices
from privgrid.market.negotiation import negotiate, welfare
from privgrid.market.setup import MarketSetup, agent_costs, build_setup, played_costs
from privgrid.market.stopping import Residuals
from privgrid.results import (
    CONVERGED,
    FAILED,
    INTERRUPTED,
    NOT_CONVERGED,
    Outcome,
    build_results,
    dumps,
    optimal_block,
)
from privgrid.roles.market_operator.node import RunOutcome, TraceRow
from privgrid.wire.kinds import AgentFinal

#: Files of ours in a run folder, removed before a fresh run writes its own: a failed run
#: must not leave the previous run's plots (or results) looking like its own.
OUTPUTS = ("results.json", "trace.csv", "attack.json", "plots/convergence.png", "plots/trades.png")
TRACE_COLUMNS = ["round", "r_P", "r_L", "r_d", "r_C", "elapsed_s", "welfare"]


def assemble(setup: MarketSetup, finals: Mapping[str, AgentFinal]) -> dict[str, np.ndarray]:
    """The agents' final reports as trade vectors in canonical order."""
    g = setup.graph
    out = {name: np.full(g.n_trades, np.nan) for name in ("P", "lam", "lam_peer", "c")}
    for agent, body in finals.items():
        slots = g.slots[g.index(agent)]
        for name in out:
            values = getattr(body, name)
            if len(values) == len(slots):
                out[name][slots] = decode(np.array(values, dtype=np.int64))
    return out


def merge_kkt(parts: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    checks = [c for part in parts for c in part]
    failures = [dict(c) for c in checks if not c.get("passed", False)]
    return {"passed": bool(checks) and not failures, "checked": len(checks), "failures": failures}


def _participant_stats(outcome: RunOutcome) -> dict[str, dict[str, float]]:
    stats = {agent: dict(body.stats) for agent, body in outcome.finals.items()}
    if outcome.lm_final is not None:
        stats["LM"] = dict(outcome.lm_final.stats)
    return stats


def _totals(stats: Mapping[str, Mapping[str, float]], key: str) -> float:
    return float(sum(s.get(key, 0.0) for s in stats.values()))


def status_of(outcome: RunOutcome, interrupted: bool = False) -> str:
    """The results' ``status`` (:data:`privgrid.results.STATUSES`) of a run's outcome."""
    if interrupted:
        return INTERRUPTED
    if outcome.error is not None:
        return FAILED
    return CONVERGED if outcome.converged else NOT_CONVERGED


def build(
    setup: MarketSetup,
    outcome: RunOutcome,
    *,
    run: str,
    mode: str,
    mo_stats: Mapping[str, float],
    evaluate: bool = True,
    interrupted: bool = False,
) -> tuple[dict[str, Any], list[float | None]]:
    """Results dict (schema of :mod:`privgrid.results`) and the welfare trace (or Nones).

    The evaluator (centralised QP, replay) runs only for a run that ended without an error:
    a failed run's last state is reported as the participants left it, unjudged."""
    status = status_of(outcome, interrupted)
    evaluate = evaluate and status in (CONVERGED, NOT_CONVERGED)
    g = setup.graph
    v = assemble(setup, outcome.finals)
    lm = outcome.lm_final
    n_lines = len(setup.limited)
    eta = LinePrices(
        decode(np.array(lm.eta_up if lm else [0] * n_lines, dtype=np.int64)),
        decode(np.array(lm.eta_down if lm else [0] * n_lines, dtype=np.int64)),
    )
    complete = len(outcome.finals) == g.n_agents and outcome.lm_final is not None
    trades = np.nan_to_num(v["P"])
    mo_checks: list[Check] = []
    t_kkt = time.perf_counter()
    if complete:
        tol = Tolerances.for_market(setup.scenario.market)
        mo_checks = check_pairs(setup, trades, v["lam"], tol, outcome.dropped)
    kkt_time = time.perf_counter() - t_kkt  # the MO's checks; each party times its own
    kkt = merge_kkt(
        [body.kkt for body in outcome.finals.values()]
        + [lm.kkt if lm else []]
        + [[c.as_dict() for c in mo_checks]]
    )
    if not complete:
        kkt["passed"] = False
    costs = agent_costs(setup.scenario)
    run_welfare = welfare(setup, costs, trades) if complete else float("nan")
    judged = without_pairs(setup, outcome.dropped)
    optimal_welfare = optimal_totals = optimal = theta = central_time = None
    welfare_trace: list[float | None] = [None] * len(outcome.trace)
    if evaluate and complete:
        try:
            central = solve_central(judged, costs)
            optimal_welfare, optimal_totals = central.welfare, central.totals
            optimal = optimal_block(central.theta, central.line_prices)
            central_time = central.solve_time
        except InfeasibleMarketError:
            pass
        if not outcome.dropped:  # a replay reproduces only an undisturbed run
            replay = negotiate(
                setup,
                played_costs(setup.scenario),
                max_rounds=max(outcome.rounds, 1),
                welfare_costs=costs,
            )
            if np.array_equal(replay.state.trades, trades):
                welfare_trace = [r.welfare for r in replay.trace[: len(outcome.trace)]]
                theta = replay.state.theta
    stats = _participant_stats(outcome)
    stats["MO"] = dict(mo_stats)
    rounds = max(outcome.rounds, 1)
    negotiation = max(outcome.stopped - outcome.started, 0.0)
    sent = _totals(stats, "sent")
    sent_bytes = _totals(stats, "sent_bytes")
    last = outcome.trace[-1].residuals.as_dict() if outcome.trace else {}
    results = build_results(
        setup,
        Outcome(
            outcome.converged,
            outcome.rounds,
            trades,
            np.nan_to_num(v["lam"]),
            np.nan_to_num(v["c"]),
            eta,
            theta,
        ),
        welfare=run_welfare,
        optimal_welfare=optimal_welfare,
        optimal_totals=optimal_totals,
        kkt=kkt,
        residuals=last,
        timings={
            "negotiation_s": negotiation,
            "per_round_s": negotiation / rounds,
            "finish_s": max(outcome.finished - outcome.stopped, 0.0),
            "crypto_s": _totals(stats, "crypto_s"),
            "compute_s": _totals(stats, "compute_s"),
            "wait_s": _totals(stats, "wait_s"),
            "central_s": central_time,
            "kkt_s": kkt_time,
            # Round 1 to now: negotiation, final reports, ledger vote and this evaluation.
            "total_s": time.perf_counter() - outcome.started if outcome.started else 0.0,
        },
        mode=mode,
        optimal=optimal,
        status=status,
        extra={
            "run": run,
            "reason": outcome.reason,
            "error": outcome.error,
            "violations": outcome.violations,
            "messages": {
                "sent": int(sent),
                "bytes": int(sent_bytes),
                "per_round": sent / rounds,
                "bytes_per_round": sent_bytes / rounds,
                "rejected": int(_totals(stats, "rejected")),
            },
            "participants": stats,
            "proofs": {
                "made": int(_totals(stats, "proofs_made")),
                "verified": int(_totals(stats, "proofs_verified")),
                "failed": int(_totals(stats, "proofs_failed")),
            },
            "crypto_phases": crypto_phases(stats),
            "dropped_pairs": outcome.dropped,
            "evaluation": "welfare and optimum by the simulation's evaluator (reads private "
            "costs from the scenario); not known to any participant",
        },
    )
    return results, welfare_trace


def crypto_phases(stats: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Seconds of cryptography per phase, summed over participants (``crypto_<phase>``)."""
    phases: dict[str, float] = {}
    for participant in stats.values():
        for key, value in participant.items():
            if key.startswith("crypto_") and key != "crypto_s":
                phase = key.removeprefix("crypto_") + "_s"
                phases[phase] = phases.get(phase, 0.0) + float(value)
    return phases


def without_pairs(setup: MarketSetup, dropped: Sequence[Sequence[str]]) -> MarketSetup:
    """The market the run ended up clearing: the scenario without the pairs the MO dropped."""
    if not dropped:
        return setup
    gone = {frozenset(p) for p in dropped}
    pairs = [list(p) for p in setup.scenario.pairs if frozenset(p) not in gone]
    market = setup.scenario.market.model_copy(update={"pairs": pairs})
    return build_setup(setup.scenario.model_copy(update={"market": market}))


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _trace_row(row: TraceRow, welfare_value: float | None) -> list[Any]:
    r = row.residuals
    return [
        row.round,
        r.reciprocity,
        r.line,
        r.dual,
        r.consensus,
        round(row.elapsed, 6),
        "" if welfare_value is None else welfare_value,
    ]


def write_trace(
    path: Path, trace: Sequence[TraceRow], welfare_trace: Sequence[float | None]
) -> None:
    """The end-of-run ``trace.csv``, with the evaluator's welfare column (replaces the live
    file of :class:`TraceFile` in one rename)."""
    rows = [TRACE_COLUMNS]
    rows += [_trace_row(row, w) for row, w in zip(trace, welfare_trace, strict=True)]
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    write_atomic(path, buffer.getvalue())


def read_trace(path: Path) -> list[TraceRow]:
    """The rows of a ``trace.csv`` (live or final); an absent or unreadable file has none."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return [
            TraceRow(
                int(r["round"]),
                Residuals(float(r["r_P"]), float(r["r_L"]), float(r["r_d"]), float(r["r_C"])),
                float(r["elapsed_s"]),
            )
            for r in rows
        ]
    except (OSError, KeyError, TypeError, ValueError):
        return []


class TraceFile:
    """``trace.csv`` written while the run goes on: one row appended (and flushed) per round,
    so another program can follow a live run. Rewritten whole at the first call, which also
    covers the rounds a restarted MO restored from its checkpoint; the welfare column stays
    empty until :func:`write_trace` at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0  # last round in the file
        self.started = False

    def sync(self, trace: Sequence[TraceRow]) -> None:
        """Append the rows of ``trace`` not in the file yet."""
        if not self.started:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(TRACE_COLUMNS)
            self.started = True
        new = [row for row in trace if row.round > self.written]
        if not new:
            return
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(_trace_row(row, None) for row in new)
            handle.flush()
        self.written = new[-1].round


def clear_outputs(folder: Path) -> None:
    """Remove the files a previous run left in ``folder`` (:data:`OUTPUTS`), nothing else."""
    for name in OUTPUTS:
        (folder / name).unlink(missing_ok=True)


def status_title(results: Mapping[str, Any]) -> str:
    """What a plot's title says about how the run ended ("" for a converged run)."""
    status = results.get("status", CONVERGED)
    if status == FAILED:
        error = str(results.get("error") or "")
        return "FAILED: " + (error if len(error) <= 70 else error[:69] + "…")
    if status == INTERRUPTED:
        return "INTERRUPTED"
    if status == NOT_CONVERGED:
        return "NOT CONVERGED"
    return ""


def has_cleared_trades(results: Mapping[str, Any]) -> bool:
    """Whether any trade is non-zero (a failed run's last state may be all zeros)."""
    return any(abs(t["power"] or 0.0) > 1e-9 for t in results["trades"])


def write_plots(
    folder: Path,
    results: Mapping[str, Any],
    trace: Sequence[TraceRow],
    epsilon_p: float,
    epsilon_lambda: float,
) -> dict[str, str]:
    """Draw ``convergence.png`` (if there is a trace) and ``trades.png`` (if any trade is not
    zero) into ``folder``, after removing the ones a previous run left there. A run that did
    not converge says so in each title. Returns file name → title of what was written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("convergence.png", "trades.png"):  # a previous run's plots never stay
        (folder / name).unlink(missing_ok=True)
    verdict = status_title(results)
    suffix = f"\n{verdict}" if verdict else ""
    if trace:
        fig, ax = plt.subplots(figsize=(7, 4))
        rounds = [r.round for r in trace]
        for name, label in (
            ("reciprocity", "r_P (kW)"),
            ("line", "r_L (kW)"),
            ("dual", "r_d ($/kW)"),
            ("consensus", "r_C ($/kW)"),
        ):
            values = [max(getattr(r.residuals, name), 1e-12) for r in trace]
            ax.semilogy(rounds, values, label=label)
        ax.axhline(epsilon_p, color="grey", linestyle="--", linewidth=0.8, label="ε_P")
        if epsilon_lambda != epsilon_p:
            ax.axhline(epsilon_lambda, color="grey", linestyle=":", linewidth=0.8, label="ε_λ")
        ax.set_xlabel("round")
        ax.set_ylabel("residual")
        ax.set_title(
            f"Convergence: {results['scenario']} ({results['mode']}){suffix}",
            color="firebrick" if verdict else "black",
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "convergence.png", dpi=120)
        written["convergence.png"] = ax.get_title()
        plt.close(fig)
    trades = sorted(results["trades"], key=lambda t: (t["seller"], t["buyer"]))
    if has_cleared_trades(results):
        height = max(3.0, 0.25 * len(trades))
        fig, ax = plt.subplots(figsize=(7, min(height, 40)))
        labels = [f"{t['seller']}→{t['buyer']}" for t in trades]
        ax.barh(labels, [t["power"] for t in trades], color="tab:blue")
        for y, t in enumerate(trades):
            ax.annotate(
                f"{t['price']:.3f} $/kW",
                (t["power"], y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.set_xlim(0, 1.3 * max([t["power"] for t in trades] + [1e-9]))
        ax.invert_yaxis()
        ax.set_xlabel("power (kW), annotated with the price")
        ax.set_title(
            f"{'Cleared trades' if not verdict else 'Trades at the stop, not cleared'}: "
            f"{results['scenario']}{suffix}",
            color="firebrick" if verdict else "black",
        )
        fig.tight_layout()
        fig.savefig(folder / "trades.png", dpi=120)
        written["trades.png"] = ax.get_title()
        plt.close(fig)
    return written


def write_run_folder(
    folder: Path,
    results: Mapping[str, Any],
    trace: Sequence[TraceRow],
    welfare_trace: Sequence[float | None],
    setup: MarketSetup,
) -> None:
    market = setup.scenario.market
    write_trace(folder / "trace.csv", trace, welfare_trace)
    write_plots(folder / "plots", results, trace, market.epsilon_p, market.epsilon_lambda)
    write_results(folder, results)


def write_results(folder: Path, results: Mapping[str, Any]) -> None:
    """``results.json`` as strict JSON (no NaN or Infinity: :func:`privgrid.results.dumps`)."""
    write_atomic(folder / "results.json", dumps(results) + "\n")


def failure_results(
    setup: MarketSetup,
    *,
    run: str,
    mode: str,
    error: str,
    interrupted: bool = False,
    trace: Sequence[TraceRow] = (),
) -> dict[str, Any]:
    """The results of a run whose MO could not write them (it was killed, or exited on bad
    input): every key of the schema, the rounds and residuals of the live ``trace.csv``, and
    ``status``/``error`` saying what happened. Nothing else is known."""
    outcome = RunOutcome(
        rounds=trace[-1].round if trace else 0,
        reason="interrupted" if interrupted else "participant failed",
        error=error,
        trace=list(trace),
    )
    results, _ = build(
        setup, outcome, run=run, mode=mode, mo_stats={}, evaluate=False, interrupted=interrupted
    )
    results["ledger"] = None
    results["participants"] = {}  # their counters died with the MO
    timings = results["timings"]
    for key in timings:  # not measured: the participants' counters died with the MO
        timings[key] = None
    if trace:
        timings["negotiation_s"] = trace[-1].elapsed
        timings["per_round_s"] = trace[-1].elapsed / max(trace[-1].round, 1)
    return results
