"""Proof of Solution on a proposed block: each participant checks its own part and votes.

The KKT checks themselves are :mod:`privgrid.market.kkt`; this module turns a block back into
the market's trade vectors and gives each role its list of checks:

- an agent: A1–A4 with its private cost and marginal value θ (``check_agent``), plus
  ``A0-own-record`` — the block shows the trades, prices and charges the agent holds, up to
  the 2^-32 rounding (otherwise the MO could move trade volume between partners unnoticed);
- the LM: L1–L3 on the block's trades, charges and line prices (``check_lines``), plus
  ``L0-line-record`` — every network line is in the block once, with its limit and the flow
  the block's trades cause;
- the MO: A4 on every pair (``check_pairs``).

:func:`vote_on` signs ``accept`` if every check passes, else ``reject`` with the failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privgrid.crypto.identity import Identity
from privgrid.ledger.block import MARKET, Block
from privgrid.ledger.encoding import from_fixed
from privgrid.ledger.errors import BlockError
from privgrid.ledger.votes import Vote, sign_vote
from privgrid.market.agent_step import AgentCost
from privgrid.market.fixedpoint import RESOLUTION
from privgrid.market.kkt import (
    Check,
    Tolerances,
    agent_view,
    check_agent,
    check_lines,
    check_pairs,
)
from privgrid.market.line_step import LinePrices
from privgrid.market.setup import MarketSetup

#: ``A0-own-record`` tolerance: equal up to rounding onto the 2^-32 grid. Values that crossed
#: the wire are on the grid already and compare exactly.
_SAME_VALUE = RESOLUTION / 2


@dataclass(frozen=True)
class BlockSolution:
    """A market block as the market's vectors, in the trade graph's canonical order."""

    trades: np.ndarray
    prices: np.ndarray
    charges: np.ndarray
    line_prices: LinePrices


def block_solution(block: Block, setup: MarketSetup) -> BlockSolution:
    """Map a market block onto ``setup``'s trade graph and limited lines.

    Raises :class:`BlockError` if the block lacks a pair or a limited line of the market, or
    names a pair the market does not have.
    """
    if block.kind != MARKET:
        raise BlockError(f"block {block.height} is not a market block")
    g = setup.graph
    vectors = {name: np.full(g.n_trades, np.nan) for name in ("P", "lam", "c")}
    seen: set[int] = set()
    for entry in block.body["trades"]:
        seller, buyer = entry["seller"], entry["buyer"]
        try:
            t, m = g.trade(seller, buyer), g.trade(buyer, seller)
        except (KeyError, ValueError) as exc:
            raise BlockError(f"block trades {seller}-{buyer}, not a pair of this market") from exc
        seen.add(min(t, m))
        for name, side, key in (
            ("P", t, "power"),
            ("P", m, "buyer_power"),
            ("lam", t, "price"),
            ("lam", m, "buyer_price"),
            ("c", t, "seller_charge"),
            ("c", m, "buyer_charge"),
        ):
            vectors[name][side] = from_fixed(entry[key])
    if len(seen) != len(g.pairs):
        absent = [
            f"{g.agent_ids[a]}-{g.agent_ids[b]}"
            for p, (a, b) in enumerate(g.pairs)
            if 2 * p not in seen
        ]
        raise BlockError(f"block has no trade for pairs {absent}")
    lines = {ln["id"]: ln for ln in block.body["lines"]}
    up, down = [], []
    for branch in setup.limited:
        name = setup.line_names[branch]
        if name not in lines:
            raise BlockError(f"block has no entry for limited line {name}")
        up.append(from_fixed(lines[name]["price_up"]))
        down.append(from_fixed(lines[name]["price_down"]))
    return BlockSolution(
        vectors["P"], vectors["lam"], vectors["c"], LinePrices(np.array(up), np.array(down))
    )


def tolerances(setup: MarketSetup) -> Tolerances:
    return Tolerances.for_market(setup.scenario.market)


def agent_checks(
    block: Block,
    setup: MarketSetup,
    agent: str,
    cost: AgentCost,
    theta: float,
    held: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> list[Check]:
    """Agent ``agent``'s part. ``held``: its own final (trades, prices, charges), slot order."""
    sol = block_solution(block, setup)
    i = setup.graph.index(agent)
    slots = setup.graph.slots[i]
    shown = (sol.trades[slots], sol.prices[slots], sol.charges[slots])
    gap = _record_gap(held, shown)
    checks = [Check("A0-own-record", f"agent {agent}", gap, _SAME_VALUE)]
    view = agent_view(setup, i, sol.trades, sol.prices, sol.charges)
    return checks + check_agent(agent, cost, theta, view, tolerances(setup))


def absent_checks(block: Block, agent: str) -> list[Check]:
    """The part of an agent that sits a day's interval out (registered, but not in the
    market): the block shows no trade of its own (``A0-own-record``)."""
    own = sum(agent in (t["seller"], t["buyer"]) for t in block.body["trades"])
    return [Check("A0-own-record", f"agent {agent}", float(own), 0.0)]


def _record_gap(held: Sequence[np.ndarray], shown: Sequence[np.ndarray]) -> float:
    """Largest difference between what an agent holds and what the block shows (NaN and
    length mismatches count as infinitely different)."""
    diffs = []
    for mine, block_side in zip(held, shown, strict=True):
        values = np.asarray(mine, dtype=np.float64)
        if values.shape != block_side.shape:
            return float("inf")
        diffs.append(np.abs(values - block_side))
    gap = float(np.max(np.concatenate(diffs), initial=0.0))
    return float("inf") if np.isnan(gap) else gap


def lm_checks(block: Block, setup: MarketSetup) -> list[Check]:
    """The LM's part: the block's line records, then L1–L3."""
    sol = block_solution(block, setup)
    tol = tolerances(setup)
    flows = setup.flows(sol.trades)
    limits = {int(b): float(f) for b, f in zip(setup.limited, setup.fmax, strict=True)}
    lines = {ln["id"]: ln for ln in block.body["lines"]}
    checks = []
    for branch, name in enumerate(setup.line_names):
        entry = lines.pop(name, None)
        if entry is None:
            checks.append(Check("L0-line-record", f"line {name}", float("inf"), tol.power))
            continue
        limit = None if entry["limit"] is None else from_fixed(entry["limit"])
        expected = limits.get(branch)
        limit_error = 0.0 if limit == expected else float("inf")
        if limit is not None and expected is not None:
            limit_error = abs(limit - expected)
        flow_error = abs(from_fixed(entry["flow"]) - float(flows[branch]))
        checks.append(
            Check("L0-line-record", f"line {name}", max(limit_error, flow_error), tol.power)
        )
    checks += [Check("L0-line-record", f"line {name}", float("inf"), tol.power) for name in lines]
    return checks + check_lines(setup, sol.trades, sol.charges, sol.line_prices, tol)


def mo_checks(block: Block, setup: MarketSetup) -> list[Check]:
    """The MO's part: A4 (reciprocity, price agreement) on every pair of the block."""
    sol = block_solution(block, setup)
    return check_pairs(setup, sol.trades, sol.prices, tolerances(setup))


def vote_on(identity: Identity, voter: str, block: Block, checks: Sequence[Check]) -> Vote:
    """Sign ``accept`` if every check passed, else ``reject`` listing the failed ones."""
    failures = [c for c in checks if not c.passed]
    return sign_vote(identity, voter, block.hash, not failures, failures)
