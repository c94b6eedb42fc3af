"""``privgrid report RUN_DIR``: the run folder's results, from the MO's record and the scenario.

Runs after the MO's protocol work, in another process (``privgrid run`` calls it once every
participant has exited; in Docker the MO's container runs it after the MO), so that the MO
handles protocol data only. Two sources, kept apart:
- **the protocol** (``protocol.json``, :mod:`privgrid.protocol_record`): the agents' and the
  LM's final reports (cleared trades, prices, charges, line prices, each party's own KKT
  checks, traffic counters), the MO's residual trace, violations and ledger verdict;
- **the evaluator** (a simulation oracle, not a participant): it reads every agent's private
  cost from the scenario file to compute welfare and the centralised optimum, and replays the
  negotiation in one process to give ``trace.csv`` a welfare column and ``agents[].theta`` a
  value (as in ``privgrid solve``). The replay is used only if it reproduces the run's final
  trades bit for bit. Nothing it computes goes back to a participant.

What it writes: ``results.json`` (the schema of :mod:`privgrid.results`), the final
``trace.csv`` and ``plots/``, and in an attack scenario ``attack.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privgrid.market.central import InfeasibleMarketError, solve_central
from privgrid.market.fixedpoint import decode
from privgrid.market.kkt import Check, Tolerances, check_pairs
from privgrid.market.line_step import LinePrices
from privgrid.market.negotiation import negotiate, welfare
from privgrid.market.setup import MarketSetup, agent_costs, build_setup, played_costs
from privgrid.plots import write_plots
from privgrid.protocol_record import ProtocolRecord, RecordError
from privgrid.results import (
    CONVERGED,
    FAILED,
    INTERRUPTED,
    NOT_CONVERGED,
    Outcome,
    build_results,
    optimal_block,
)
from privgrid.roles.market_operator.node import TraceRow
from privgrid.runfolder import TRACE_FILE, write_results, write_trace
from privgrid.scenario import load_scenario
from privgrid.wire.kinds import AgentFinal

SCENARIO_FILE = "scenario.toml"  # what `privgrid run` leaves in the run folder
_log = logging.getLogger("privgrid.report")


def assemble(setup: MarketSetup, finals: Mapping[str, AgentFinal]) -> dict[str, np.ndarray]:
    """The agents' final reports as trade vectors in canonical order (NaN where none)."""
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


def _participant_stats(record: ProtocolRecord) -> dict[str, dict[str, float]]:
    """Every participant's counters as its final report gave them (the MO's its own)."""
    if not record.measured:
        return {}  # they died with the MO
    stats = {agent: dict(body.stats) for agent, body in record.finals.items()}
    if record.lm_final is not None:
        stats["LM"] = dict(record.lm_final.stats)
    stats["MO"] = dict(record.mo_stats or {})
    return stats


def _totals(stats: Mapping[str, Mapping[str, float]], key: str) -> float:
    return float(sum(s.get(key, 0.0) for s in stats.values()))


def status_of(record: ProtocolRecord) -> str:
    """The results' ``status`` (:data:`privgrid.results.STATUSES`) of a run's record."""
    if record.interrupted:
        return INTERRUPTED
    if record.error is not None:
        return FAILED
    return CONVERGED if record.converged else NOT_CONVERGED


def build(
    setup: MarketSetup, record: ProtocolRecord, *, replay: bool = True
) -> tuple[dict[str, Any], list[float | None]]:
    """Results dict (schema of :mod:`privgrid.results`) and the welfare trace (or Nones).

    The evaluator (centralised QP, replay) runs only for a run that ended without an error:
    a failed run's last state is reported as the participants left it, unjudged. What the MO
    did not live to measure (a record of :meth:`ProtocolRecord.failed`) is ``null``.
    ``replay=False`` skips the replay (a warm-started market of a day: a cold replay cannot
    reproduce it)."""
    started = time.perf_counter()
    status = status_of(record)
    evaluate = status in (CONVERGED, NOT_CONVERGED)
    g = setup.graph
    v = assemble(setup, record.finals)
    lm = record.lm_final
    n_lines = len(setup.limited)
    eta = LinePrices(
        decode(np.array(lm.eta_up if lm else [0] * n_lines, dtype=np.int64)),
        decode(np.array(lm.eta_down if lm else [0] * n_lines, dtype=np.int64)),
    )
    complete = len(record.finals) == g.n_agents and lm is not None
    trades = np.nan_to_num(v["P"])
    mo_checks: list[Check] = []
    t_kkt = time.perf_counter()
    if complete:
        tol = Tolerances.for_market(setup.scenario.market)
        mo_checks = check_pairs(setup, trades, v["lam"], tol, record.dropped)
    kkt_time = time.perf_counter() - t_kkt  # the MO's part (A4, public data); each party's own
    kkt = merge_kkt(
        [body.kkt for body in record.finals.values()]
        + [lm.kkt if lm else []]
        + [[c.as_dict() for c in mo_checks]]
    )
    if not complete:
        kkt["passed"] = False
    costs = agent_costs(setup.scenario)
    run_welfare = welfare(setup, costs, trades) if complete else float("nan")
    optimal_welfare = optimal_totals = optimal = theta = central_time = None
    welfare_trace: list[float | None] = [None] * len(record.trace)
    if evaluate and complete:
        try:
            central = solve_central(without_pairs(setup, record.dropped), costs)
            optimal_welfare, optimal_totals = central.welfare, central.totals
            optimal = optimal_block(central.theta, central.line_prices)
            central_time = central.solve_time
        except InfeasibleMarketError:
            pass
        if replay and not record.dropped:  # a replay reproduces only an undisturbed run
            replayed = negotiate(
                setup,
                played_costs(setup.scenario),
                max_rounds=max(record.rounds, 1),
                welfare_costs=costs,
            )
            if np.array_equal(replayed.state.trades, trades):
                welfare_trace = [r.welfare for r in replayed.trace[: len(record.trace)]]
                theta = replayed.state.theta
    stats = _participant_stats(record)
    rounds = max(record.rounds, 1)
    sent = _totals(stats, "sent")
    sent_bytes = _totals(stats, "sent_bytes")
    last = record.trace[-1].residuals.as_dict() if record.trace else {}
    results = build_results(
        setup,
        Outcome(
            record.converged,
            record.rounds,
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
        timings=_timings(record, stats, central_time, kkt_time, started),
        mode=record.mode,
        optimal=optimal,
        status=status,
        extra={
            "run": record.run,
            "reason": record.reason,
            "error": record.error,
            "violations": record.violations,
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
            "dropped_pairs": record.dropped,
            "evaluation": "welfare and optimum by the simulation's evaluator (reads private "
            "costs from the scenario); not known to any participant",
            "ledger": record.ledger,
        },
    )
    return results, welfare_trace


def _timings(
    record: ProtocolRecord,
    stats: Mapping[str, Mapping[str, float]],
    central_s: float | None,
    kkt_s: float,
    started: float,
) -> dict[str, float | None]:
    clocks = record.clocks
    if clocks is None:  # the MO died: only what the live trace shows is known
        elapsed = record.trace[-1].elapsed if record.trace else None
        negotiation = dict.fromkeys(("negotiation_s", "per_round_s"))
        if record.trace and elapsed is not None:
            negotiation = {
                "negotiation_s": elapsed,
                "per_round_s": elapsed / max(record.trace[-1].round, 1),
            }
        unknown = ("finish_s", "crypto_s", "compute_s", "wait_s", "central_s", "kkt_s", "total_s")
        return {**negotiation, **dict.fromkeys(unknown)}
    negotiation_s = clocks.negotiation_s
    evaluation_s = time.perf_counter() - started
    return {
        "negotiation_s": negotiation_s,
        "per_round_s": negotiation_s / max(record.rounds, 1),
        "finish_s": clocks.finish_s,
        "crypto_s": _totals(stats, "crypto_s"),
        "compute_s": _totals(stats, "compute_s"),
        "wait_s": _totals(stats, "wait_s"),
        "central_s": central_s,
        "kkt_s": kkt_s,
        # Round 1 to the MO's record (negotiation, final reports, ledger vote), plus this
        # evaluation.
        "total_s": clocks.total_s + evaluation_s if clocks.total_s else 0.0,
    }


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


def failure_results(
    setup: MarketSetup,
    *,
    run: str,
    mode: str,
    error: str,
    interrupted: bool = False,
    trace: Sequence[TraceRow] = (),
) -> dict[str, Any]:
    """The results of a run whose MO could not write its record (it was killed, or exited on
    bad input): every key of the schema, the rounds and residuals of the live ``trace.csv``,
    and ``status``/``error`` saying what happened. Nothing else is known."""
    record = ProtocolRecord.failed(
        run=run, mode=mode, error=error, interrupted=interrupted, trace=trace
    )
    return build(setup, record)[0]


def write_report(
    folder: Path,
    setup: MarketSetup,
    record: ProtocolRecord,
    warn: Callable[[str], None] = _log.warning,
) -> dict[str, Any]:
    """``trace.csv`` (with the welfare column), ``plots/``, ``results.json`` and, in an attack
    scenario, ``attack.json`` of ``record``; returns the results. A plot that cannot be drawn
    is a ``warn``ing, not a failure: the results are what matters."""
    results, welfare_trace = build(setup, record)
    market = setup.scenario.market
    write_trace(folder / TRACE_FILE, record.trace, welfare_trace)
    try:
        write_plots(
            folder / "plots", results, record.trace, market.epsilon_p, market.epsilon_lambda
        )
    except Exception as exc:  # matplotlib fails in many ways; none may cost the results
        warn(f"could not draw the plots: {exc}")
    write_results(folder, results)
    if setup.scenario.attack is not None and results.get("trades"):
        from privgrid.attack.evaluate import write_attack_report

        write_attack_report(folder, setup, results)  # the coalition's estimates vs the truth
    return results


def scenario_of(folder: Path, record: ProtocolRecord, scenario: Path | None = None) -> Path:
    """The scenario to evaluate with: ``scenario`` if given, else the run folder's own
    (``privgrid run`` writes the effective one there), else the file the MO read.

    Raises:
        RecordError: none of them exists.
    """
    candidates = [scenario] if scenario is not None else [folder / SCENARIO_FILE]
    if scenario is None and record.scenario_file is not None:
        candidates.append(Path(record.scenario_file))
    for path in candidates:
        if path is not None and path.is_file():
            return path
    names = " or ".join(str(p) for p in candidates)
    raise RecordError(f"no scenario to evaluate the run with: {names} (give --scenario)")


def report_run(
    folder: Path, scenario: Path | None = None, warn: Callable[[str], None] = _log.warning
) -> dict[str, Any]:
    """``privgrid report``: read ``folder/protocol.json`` and the scenario, write the results.

    Raises:
        RecordError: no record, or a malformed one, or no scenario, or one that is not the
            run's (its agents or pairs do not fit the final reports).
        ScenarioError: the scenario is invalid.
    """
    record = ProtocolRecord.read(folder)
    path = scenario_of(folder, record, scenario)
    setup = build_setup(load_scenario(path))
    _check_fits(setup, record, path)
    return write_report(folder, setup, record, warn)


def _check_fits(setup: MarketSetup, record: ProtocolRecord, path: Path) -> None:
    """The record's final reports are of this scenario's agents, with its trade counts."""
    g = setup.graph
    for agent, final in record.finals.items():
        if agent not in g.agent_ids:
            raise RecordError(f"{path}: the run's agent {agent} is not in this scenario")
        if len(final.P) != len(g.slots[g.index(agent)]):
            raise RecordError(
                f"{path}: agent {agent} reported {len(final.P)} trades, the scenario gives it "
                f"{len(g.slots[g.index(agent)])} partners: not the run's scenario"
            )
