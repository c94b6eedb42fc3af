"""The market ledger: blocks, Proof-of-Solution votes, a hash chain in SQLite, verification.

Modules, one job each (pure unless noted):

==============  ==========================================================================
``encoding``    canonical msgpack (sorted keys, no floats), SHA-256, fixed-point helpers
``block``       :class:`Block`: header + body, canonical bytes, hash, strict decoding
``schema``      shape checks of block bodies
``genesis``     block 0: the registered roster and quorum; the ledger id
``market``      market blocks: cleared trades (both sides), lines, settlement
``settlement``  who pays whom, exactly balanced in fixed point
``votes``       signed accept/reject votes and the commit rule
``rules``       what a block needs to join the chain (shared by append and verify)
``pos``         Proof of Solution on a block: each role's KKT checks → its vote
``store``       :class:`Ledger`: the append-only SQLite file (I/O)
``verify``      :func:`verify_ledger`: re-check a whole file (I/O)
``view``, ``cli``  ``privgrid ledger show|verify``
==============  ==========================================================================

``pos`` (which needs the market setup) and the CLI are not imported here, so the core stays
cheap to import.
"""

from privgrid.ledger.block import Block
from privgrid.ledger.errors import (
    BlockError,
    ChainError,
    CommitRefused,
    EncodingError,
    LedgerError,
    LedgerExistsError,
    LedgerFormatError,
    VoteError,
)
from privgrid.ledger.genesis import (
    genesis_block,
    ledger_id,
    participants_from_scenario,
    required_voters,
    roster_of,
)
from privgrid.ledger.market import market_block, trades_from_results
from privgrid.ledger.settlement import BALANCE_TOLERANCE, imbalance, settle
from privgrid.ledger.store import Ledger
from privgrid.ledger.verify import VerifyReport, verify_ledger
from privgrid.ledger.votes import Decision, Failure, Vote, commit_decision, sign_vote, verify_vote

__all__ = [
    "BALANCE_TOLERANCE",
    "Block",
    "BlockError",
    "ChainError",
    "CommitRefused",
    "Decision",
    "EncodingError",
    "Failure",
    "Ledger",
    "LedgerError",
    "LedgerExistsError",
    "LedgerFormatError",
    "VerifyReport",
    "Vote",
    "VoteError",
    "commit_decision",
    "genesis_block",
    "imbalance",
    "ledger_id",
    "market_block",
    "participants_from_scenario",
    "required_voters",
    "roster_of",
    "settle",
    "sign_vote",
    "trades_from_results",
    "verify_ledger",
    "verify_vote",
]
