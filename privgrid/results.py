"""The results schema shared by ``privgrid solve --json`` and the run folder's ``results.json``.

Pure: builds plain dicts from arrays. Trades are reported from the seller's side (the side
with the non-negative trade; the buyer holds −power), with the seller's price and charge.

Both producers emit every key of the schema, with ``null`` where a value is unknown (a run's
``agents[].theta`` when the evaluator could not replay it, say), so a reader never has to ask
which producer wrote a file. A run adds the fields in :data:`RUN_ONLY_FIELDS` and nothing else
(docs/wire.md, "The run folder").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privgrid.market.line_step import LinePrices
from privgrid.market.setup import MarketSetup

SCHEMA_VERSION = 1

#: ``status`` of a results file: how the negotiation (and, for a run, the whole run) ended.
#: ``converged``: the stopping test passed (a run: and nothing failed after it, the block is
#: committed); ``not_converged``: the round limit came first; ``failed``: a participant failed
#: (crash, timeout, protocol violation, block refused; ``error`` says which); ``interrupted``:
#: the run was stopped by a signal (Ctrl-C). ``privgrid solve`` writes only the first two.
CONVERGED, NOT_CONVERGED = "converged", "not_converged"
FAILED, INTERRUPTED = "failed", "interrupted"
STATUSES = (CONVERGED, NOT_CONVERGED, FAILED, INTERRUPTED)

#: What ``results.json`` of a run has on top of ``privgrid solve --json``: the protocol's own
#: bookkeeping (run id, stop reason, traffic, per-participant counters, proofs, the ledger) and
#: the run's extra timings. A path names a key and everything below it; ``[]`` is a list item.
RUN_ONLY_FIELDS = frozenset(
    {
        "run",
        "reason",
        "error",
        "violations",
        "messages",
        "participants",
        "proofs",
        "crypto_phases",
        "dropped_pairs",
        "evaluation",
        "ledger",
        "timings.per_round_s",
        "timings.finish_s",
        "timings.crypto_s",
        "timings.compute_s",
        "timings.wait_s",
    }
)


@dataclass(frozen=True)
class Outcome:
    """A cleared (or last) market state as the results file shows it."""

    converged: bool
    rounds: int
    trades: np.ndarray
    prices: np.ndarray
    charges: np.ndarray
    line_prices: LinePrices
    theta: np.ndarray | None = None  # private marginal values: known in-process only


def trade_rows(setup: MarketSetup, out: Outcome) -> list[dict[str, Any]]:
    g = setup.graph
    rows = []
    for t in range(0, g.n_trades, 2):
        side = t if out.trades[t] >= 0 else t + 1  # pairs list a seller first, if any
        rows.append(
            {
                "seller": g.agent_ids[g.owner[side]],
                "buyer": g.agent_ids[g.partner[side]],
                "power": float(out.trades[side]),
                "price": float(out.prices[side]),
                "charge": float(out.charges[side]),
                "buyer_power": float(out.trades[g.mirror[side]]),
                "buyer_price": float(out.prices[g.mirror[side]]),
            }
        )
    return rows


def agent_rows(
    setup: MarketSetup, out: Outcome, optimal_totals: np.ndarray | None = None
) -> list[dict[str, Any]]:
    g = setup.graph
    rows = []
    for i, agent in enumerate(setup.scenario.agents):
        row: dict[str, Any] = {
            "id": agent.id,
            "role": str(g.roles[i]),
            "bus": agent.bus,
            "total": float(out.trades[g.slots[i]].sum()),
        }
        row["theta"] = float(out.theta[i]) if out.theta is not None else None
        row["optimal_total"] = float(optimal_totals[i]) if optimal_totals is not None else None
        rows.append(row)
    return rows


def line_rows(setup: MarketSetup, out: Outcome) -> list[dict[str, Any]]:
    flows = setup.flows(out.trades)
    limited = {int(b): r for r, b in enumerate(setup.limited)}
    rows = []
    for i, name in enumerate(setup.line_names):
        r = limited.get(i)
        rows.append(
            {
                "id": name,
                "flow": float(flows[i]),
                "limit": float(setup.fmax[r]) if r is not None else None,
                "price_up": float(out.line_prices.up[r]) if r is not None else 0.0,
                "price_down": float(out.line_prices.down[r]) if r is not None else 0.0,
            }
        )
    return rows


def build_results(
    setup: MarketSetup,
    out: Outcome,
    *,
    welfare: float,
    optimal_welfare: float | None,
    optimal_totals: np.ndarray | None,
    kkt: Mapping[str, Any],
    residuals: Mapping[str, float],
    timings: Mapping[str, float | None],
    mode: str,
    optimal: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The results dict; ``optimal`` is :func:`optimal_block` of the centralised solution.

    ``status`` (one of :data:`STATUSES`) defaults to what ``out.converged`` says. Values that
    are not finite numbers (a welfare that could not be computed) are ``None``: the dict
    always serialises to strict JSON (:func:`dumps`).
    """
    gap = None
    if optimal_welfare is not None and welfare is not None and math.isfinite(welfare):
        gap = (optimal_welfare - welfare) / max(abs(optimal_welfare), 1e-12)
    if status is None:
        status = CONVERGED if out.converged else NOT_CONVERGED
    if status not in STATUSES:
        raise ValueError(f"unknown results status {status!r}")
    results = {
        "schema": SCHEMA_VERSION,
        "scenario": setup.scenario.name,
        "mode": mode,
        "status": status,
        "converged": out.converged,
        "rounds": out.rounds,
        "social_welfare": welfare,
        "optimal_social_welfare": optimal_welfare,
        "welfare_gap": gap,
        "residuals": dict(residuals),
        "trades": trade_rows(setup, out),
        "agents": agent_rows(setup, out, optimal_totals),
        "lines": line_rows(setup, out),
        "kkt": dict(kkt),
        "timings": dict(timings),
        "optimal": dict(optimal) if optimal is not None else None,
        **(extra or {}),
    }
    return finite(results)


def finite(value: Any) -> Any:
    """``value`` with every float that is NaN or infinite replaced by ``None``, recursively
    (dicts, lists, tuples; numpy scalars and arrays become plain Python values).

    JSON has no NaN or Infinity: Python's ``json`` writes them as bare ``NaN`` tokens that
    strict parsers (and every other language) reject. A value a run could not compute is
    ``null`` instead, and the results' ``status``/``error`` say why.
    """
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return [finite(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``value`` (after :func:`finite`): ``NaN`` can never be written."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)


def optimal_block(theta: np.ndarray, line_prices: LinePrices) -> dict[str, list[float]]:
    """The centralised optimum's marginal values and line prices (``optimal`` in the results)."""
    return {
        "theta": theta.tolist(),
        "price_up": line_prices.up.tolist(),
        "price_down": line_prices.down.tolist(),
    }


def key_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """Every key path of a JSON value, e.g. ``timings.total_s`` or ``agents[].theta``.

    Lists contribute the union of their items' paths, so two results files have the same
    schema exactly when their path sets are equal, whatever the number of agents or lines.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            yield from key_paths(item, f"{prefix}[]")


def is_run_only(path: str) -> bool:
    """Whether ``path`` is, or lies below, one of :data:`RUN_ONLY_FIELDS`."""
    return any(path == f or path.startswith((f"{f}.", f"{f}[]")) for f in RUN_ONLY_FIELDS)


def overloaded_lines(lines: Sequence[Mapping[str, Any]], tol: float) -> list[str]:
    """Names of lines whose |flow| exceeds the limit by more than ``tol``."""
    return [
        ln["id"] for ln in lines if ln["limit"] is not None and abs(ln["flow"]) > ln["limit"] + tol
    ]
