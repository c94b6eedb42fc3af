"""The day's ledger: identity keys and genesis once, then one block per cleared interval.

The same blocks and votes a wire run makes: the block is :func:`cleared_block` of the
interval's final state (what the MO builds from the final reports), and every registered
participant votes with its own Proof-of-Solution checks (:mod:`privgrid.ledger.pos`) — each
agent with its own cost, marginal value and held trades, the LM on lines and charges, the MO
on every pair — signed with its own key from ``keys/`` (``privgrid keys init``'s layout).

Genesis registers every agent of the day with the envelope of its interval bounds (the
smallest ``pmin`` and the largest ``pmax`` of the day) and the role that envelope gives. An
agent that sits an interval out (nothing to trade) still votes on its block: its one check is
that the block shows no trade of its own (``A0-own-record``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privgrid.crypto.identity import Identity
from privgrid.keys import init_participant_keys
from privgrid.ledger import CommitRefused, Ledger, genesis_block
from privgrid.ledger.block import Block
from privgrid.ledger.cleared import Cleared, cleared_block
from privgrid.ledger.genesis import AgentRegistration, registered_participants
from privgrid.ledger.pos import absent_checks, agent_checks, lm_checks, mo_checks, vote_on
from privgrid.ledger.votes import Vote
from privgrid.market.kkt import Check
from privgrid.market.negotiation import NegotiationState
from privgrid.market.setup import MarketSetup, played_costs
from privgrid.scenario import LM_ID, MO_ID

Registration = AgentRegistration  # an agent as the day's genesis registers it


class DayLedger:
    """``ledger.sqlite`` and ``keys/`` of a run folder."""

    def __init__(
        self, folder: Path, name: str, agents: Sequence[Registration], quorum: Any
    ) -> None:
        ids = [a.id for a in agents]
        roster = init_participant_keys([*ids, LM_ID, MO_ID], folder / "keys")
        self.identities = {
            pid: Identity.load(folder / "keys" / f"{pid}.key") for pid in [*ids, LM_ID, MO_ID]
        }
        participants = registered_participants(agents, roster)
        self.agents = ids
        self.ledger = Ledger.create(
            folder / "ledger.sqlite", genesis_block(name, participants, quorum=quorum, run=name)
        )

    def close(self) -> None:
        self.ledger.close()

    def record(
        self, setup: MarketSetup, state: NegotiationState, rounds: int, run: str
    ) -> dict[str, Any]:
        """Build the interval's block, collect every participant's vote, append it.

        Returns ``{height, block, committed, decision}``; a refused block is not appended
        (``committed`` false, ``decision`` says who rejected and why).
        """
        head = self.ledger.head()
        cleared = Cleared.from_reals(
            rounds, state.trades, state.prices, state.charges, state.line_prices
        )
        block = cleared_block(setup, cleared, height=head.height + 1, prev_hash=head.hash, run=run)
        try:
            decision = self.ledger.append(block, self.votes(block, setup, state))
        except CommitRefused as refused:
            decision = refused.decision
        return {
            "height": block.height,
            "block": block.hash_hex,
            "committed": decision.commit,
            "decision": decision.summary(),
        }

    def votes(self, block: Block, setup: MarketSetup, state: NegotiationState) -> list[Vote]:
        g = setup.graph
        costs = played_costs(setup.scenario)
        checks: dict[str, list[Check]] = {}
        for agent in self.agents:
            if agent in g.agent_ids:
                i = g.index(agent)
                s = g.slots[i]
                held = (state.trades[s], state.prices[s], state.charges[s])
                checks[agent] = agent_checks(
                    block, setup, agent, costs[agent], float(state.theta[i]), held
                )
            else:
                checks[agent] = absent_checks(block, agent)
        checks[LM_ID] = lm_checks(block, setup)
        checks[MO_ID] = mo_checks(block, setup)
        return [vote_on(self.identities[p], p, block, c) for p, c in checks.items()]


def envelope(bounds: Sequence[Mapping[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Per agent, the smallest pmin and the largest pmax over the intervals it takes part in."""
    out: dict[str, tuple[float, float]] = {}
    for interval in bounds:
        for aid, (lo, hi) in interval.items():
            old = out.get(aid, (lo, hi))
            out[aid] = (min(old[0], lo), max(old[1], hi))
    return out
