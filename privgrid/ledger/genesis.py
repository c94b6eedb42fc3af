"""Block 0: the registration of every participant, and what the rest of the ledger trusts.

The genesis block pins the scenario's roster — ids, roles, Ed25519 identity keys and, for
agents, their bus and registered range ``[pmin, pmax]`` — and the commit quorum. Every vote in
every later block is verified against these keys, so the ledger needs no other source of
trust; its id is the hash of this block (:func:`ledger_id`). Pin that id outside the file
(``privgrid ledger verify --ledger-id``) to detect a wholesale rewrite with other keys.

Every registered participant (agents, LM and MO) is a required voter: the MO votes too, on its
own part of Proof of Solution, and that vote is its signature on the block it proposed.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from privgrid.crypto.errors import SignatureError
from privgrid.crypto.identity import Roster, public_key_from_b64
from privgrid.ledger.block import GENESIS, ZERO_HASH, Block, now_ms
from privgrid.ledger.encoding import to_fixed
from privgrid.ledger.errors import BlockError
from privgrid.ledger.schema import AGENT_ROLES, ROLES

if TYPE_CHECKING:
    from privgrid.scenario import Scenario

Quorum = Literal["all"] | int
_AGENT_FIELDS = frozenset({"bus", "pmin", "pmax"})


def _public_key_bytes(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise BlockError(f"{where}: expected a base64 string")
    try:
        public_key_from_b64(text)
    except SignatureError as exc:
        raise BlockError(f"{where}: {exc.reason}") from exc
    return base64.b64decode(text, validate=True)


def _participant(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = entry.get("role")
    if role not in ROLES:
        raise BlockError(f"{where}.role: {role!r} is not one of {sorted(ROLES)}")
    allowed = {"id", "role", "public_key"} | (_AGENT_FIELDS if role in AGENT_ROLES else set())
    if set(entry) - allowed:
        raise BlockError(f"{where}: unexpected fields {sorted(set(entry) - allowed)}")
    record: dict[str, Any] = {
        "id": entry.get("id"),
        "role": role,
        "public_key": _public_key_bytes(entry.get("public_key"), f"{where}.public_key"),
    }
    if role in AGENT_ROLES:
        for key in ("bus", "pmin", "pmax"):
            if entry.get(key) is None:
                raise BlockError(f"{where}: agent {entry.get('id')!r} needs {key!r}")
        record["bus"] = entry["bus"]
        record["pmin"] = to_fixed(entry["pmin"], f"{where}.pmin")
        record["pmax"] = to_fixed(entry["pmax"], f"{where}.pmax")
    return record


def genesis_block(
    scenario_name: str,
    participants: Sequence[Mapping[str, Any]],
    *,
    quorum: Quorum = "all",
    timestamp: int | None = None,
    run: str = "",
) -> Block:
    """The registration block.

    ``participants``: ``{id, role, public_key}`` with ``role`` one of seller / buyer /
    prosumer / lm / mo and ``public_key`` the roster's base64 Ed25519 key; agents also give
    ``bus``, ``pmin`` and ``pmax`` (kW, their registered range). Exactly one LM and one MO.
    ``quorum``: ``"all"`` (every participant must accept) or the number of accept votes
    needed — any reject still blocks a commit.
    """
    records = [_participant(p, f"participants[{i}]") for i, p in enumerate(participants)]
    body = {"scenario": scenario_name, "quorum": quorum, "participants": records}
    stamp = now_ms() if timestamp is None else timestamp
    return Block(0, ZERO_HASH, GENESIS, run, stamp, body)


def participants_from_scenario(scenario: Scenario, roster: Roster) -> list[dict[str, Any]]:
    """The genesis participant list of a scenario, with keys from its pinned roster."""
    from privgrid.scenario import LM_ID, MO_ID

    missing = [p for p in [*scenario.agent_ids, LM_ID, MO_ID] if p not in roster]
    if missing:
        raise BlockError(f"roster has no key for {missing}")
    entries: list[dict[str, Any]] = [
        {
            "id": a.id,
            "role": str(a.role),
            "public_key": roster[a.id],
            "bus": a.bus,
            "pmin": a.pmin,
            "pmax": a.pmax,
        }
        for a in scenario.agents
    ]
    entries.append({"id": LM_ID, "role": "lm", "public_key": roster[LM_ID]})
    entries.append({"id": MO_ID, "role": "mo", "public_key": roster[MO_ID]})
    return entries


@dataclass(frozen=True)
class AgentRegistration:
    """An agent as a genesis registers it: a day's agent with the envelope of its interval
    bounds (the smallest ``pmin`` and the largest ``pmax`` of the day), and the role that
    envelope gives."""

    id: str
    bus: int
    pmin: float
    pmax: float

    @property
    def role(self) -> str:
        if self.pmin >= 0:
            return "seller"
        if self.pmax <= 0:
            return "buyer"
        return "prosumer"


def registered_participants(
    agents: Sequence[AgentRegistration], roster: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The genesis participant list of ``agents`` (then the LM and the MO), keys from
    ``roster`` (id → base64 Ed25519 public key).

    Raises:
        BlockError: the roster has no key for one of them.
    """
    from privgrid.scenario import LM_ID, MO_ID

    missing = [p for p in [*(a.id for a in agents), LM_ID, MO_ID] if p not in roster]
    if missing:
        raise BlockError(f"roster has no key for {missing}")
    entries: list[dict[str, Any]] = [
        {
            "id": a.id,
            "role": a.role,
            "public_key": roster[a.id],
            "bus": a.bus,
            "pmin": a.pmin,
            "pmax": a.pmax,
        }
        for a in agents
    ]
    entries.append({"id": LM_ID, "role": "lm", "public_key": roster[LM_ID]})
    entries.append({"id": MO_ID, "role": "mo", "public_key": roster[MO_ID]})
    return entries


def _expect_genesis(block: Block) -> Block:
    if block.kind != GENESIS:
        raise BlockError(f"block {block.height} is a {block.kind!r} block, not genesis")
    return block


def ledger_id(genesis: Block) -> str:
    """The ledger's identity: the hex SHA-256 of its genesis block."""
    return _expect_genesis(genesis).hash.hex()


def roster_of(genesis: Block) -> Roster:
    """The pinned id → public key map every vote is verified against."""
    participants = _expect_genesis(genesis).body["participants"]
    return Roster({p["id"]: base64.b64encode(p["public_key"]).decode() for p in participants})


def roles_of(genesis: Block) -> dict[str, str]:
    """Participant id → role, in registration order."""
    return {p["id"]: p["role"] for p in _expect_genesis(genesis).body["participants"]}


def required_voters(genesis: Block) -> tuple[str, ...]:
    """Who must vote on every market block: every registered participant."""
    return tuple(roles_of(genesis))


def quorum_of(genesis: Block) -> Quorum:
    quorum: Quorum = _expect_genesis(genesis).body["quorum"]  # checked by the genesis rules
    return quorum


def same_registration(a: Block, b: Block) -> bool:
    """Whether two genesis blocks register the same ledger (all but time and run)."""
    return _expect_genesis(a).body == _expect_genesis(b).body
