"""The rules a block must meet to be on the chain, shared by ``Ledger.append`` and ``verify``.

Why shared: the writer refuses exactly what the verifier would flag, so a ledger written by
this package always verifies, and a ledger that verifies could have been written by it.
Shape checks are in :class:`~privgrid.ledger.block.Block` itself; these need other data —
the previous block, the genesis roster, the votes.
"""

from __future__ import annotations

from collections.abc import Iterable

from privgrid.ledger.block import MARKET, Block
from privgrid.ledger.errors import BlockError
from privgrid.ledger.genesis import quorum_of, required_voters, roles_of, roster_of
from privgrid.ledger.schema import AGENT_ROLES
from privgrid.ledger.settlement import BALANCE_TOLERANCE, imbalance, settle
from privgrid.ledger.votes import Decision, Vote, commit_decision


def check_link(block: Block, prev: Block) -> None:
    """``block`` directly follows ``prev``: next height, and ``prev_hash`` is ``prev``'s hash."""
    if block.height != prev.height + 1:
        raise BlockError(f"height {block.height} does not follow {prev.height}")
    if block.prev_hash != prev.hash:
        raise BlockError(
            f"broken link: prev_hash {block.prev_hash.hex()[:16]}… is not the hash of block "
            f"{prev.height} ({prev.hash.hex()[:16]}…)"
        )


def check_market_block(block: Block, genesis: Block) -> None:
    """A market block's content: registered agents only, and a settlement that follows from
    its trades and balances."""
    if block.kind != MARKET:
        raise BlockError(f"block {block.height} is a {block.kind!r} block, not a market block")
    roles = roles_of(genesis)
    for i, trade in enumerate(block.body["trades"]):
        for side in ("seller", "buyer"):
            agent = trade[side]
            if roles.get(agent) not in AGENT_ROLES:
                raise BlockError(f"trades[{i}].{side}: {agent!r} is not a registered agent")
    if block.body["settlement"] != settle(block.body["trades"]):
        raise BlockError("settlement does not follow from the block's trades")
    gap = imbalance(block.body["settlement"])
    if abs(gap) > BALANCE_TOLERANCE:
        raise BlockError(f"settlement does not balance: {gap:.3e} $")


def decide(block: Block, votes: Iterable[Vote], genesis: Block) -> Decision:
    """The commit rule for ``block`` under the genesis roster and quorum."""
    return commit_decision(
        votes,
        required_voters(genesis),
        quorum_of(genesis),
        block_hash=block.hash,
        roster=roster_of(genesis),
    )
