"""Every message kind: its body (a frozen dataclass), who may send it to whom, whether sealed.

One table instead of checks scattered through the roles. A receiver accepts a message only if
its kind is registered, the sender's and recipient's roles fit, and the (unsealed) body matches
the schema exactly. Each body class below is the kind's one definition: its fields carry their
wire checks (:func:`~privgrid.wire.body.wire`), and :func:`message` registers the class with its
routing (senders, recipients, sealed) in :data:`KINDS`. Values that are reals travel as int64
fixed point at scale 2^32 (:mod:`privgrid.market.fixedpoint`); big integers (ciphertexts,
proofs) as bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar, dataclass_transform

from privgrid.wire import schema as s
from privgrid.wire.body import Body, wire

AGENT, LM, MO = "agent", "lm", "mo"
ANY = frozenset({AGENT, LM, MO})
EVERYONE = "*"


class Kind(StrEnum):
    """The name a message kind has on the wire (envelope, topic)."""

    KEY = "key"
    RESYNC = "resync"
    ROUND = "round"
    STOP = "stop"
    GONE = "gone"
    CLOSED = "closed"
    VIOLATION = "violation"
    SHARE = "share"
    TRADES = "trades"
    CHARGES = "charges"
    RESIDUALS = "residuals"
    LM_RESIDUALS = "lm_residuals"
    FINAL = "final"
    LM_FINAL = "lm_final"
    SHARE_OWN = "share_own"
    SHARE_PEER = "share_peer"
    PRICE_PROOF = "price_proof"
    TRADES_ENC = "trades_enc"
    CHARGES_ENC = "charges_enc"
    BLOCK = "block"
    VOTE = "vote"
    FLOWS_MASKED = "flows_masked"
    LINE_PRICES = "line_prices"
    COALITION_RECORD = "coalition_record"
    COALITION_ORDER = "coalition_order"
    INTERVAL = "interval"


@dataclass(frozen=True)
class KindSpec:
    name: Kind
    senders: frozenset[str]
    recipients: frozenset[str]  # roles, or {EVERYONE} for broadcasts
    sealed: bool
    body_type: type[Body]
    coalition: bool = False  # travels on the coalition topic (colluders only, by ACL)
    #: Several different messages of this kind may go from one sender to one recipient in one
    #: round (one violation report per offender): not a replay or an equivocation.
    repeatable: bool = False

    @property
    def is_broadcast(self) -> bool:
        return EVERYONE in self.recipients

    @property
    def body(self) -> Mapping[str, s.Spec]:
        """The body schema: field name → check (from the body class's fields)."""
        return self.body_type.schema()


KINDS: dict[str, KindSpec] = {}

B = TypeVar("B", bound=Body)


def register(spec: KindSpec) -> KindSpec:
    """Add a kind to :data:`KINDS` (once; a second, different spec is a programming error)."""
    existing = KINDS.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"message kind {spec.name!r} registered twice with different specs")
    KINDS[spec.name] = spec
    return spec


@dataclass_transform(frozen_default=True, field_specifiers=(wire,))
def message(
    kind: Kind,
    senders: Iterable[str],
    recipients: Iterable[str],
    *,
    sealed: bool,
    coalition: bool = False,
    repeatable: bool = False,
) -> Callable[[type[B]], type[B]]:
    """Make the decorated class a frozen dataclass body of ``kind`` and register its routing."""

    def register_body(cls: type[B]) -> type[B]:
        body = dataclass(frozen=True)(cls)
        body.KIND = kind
        spec = KindSpec(
            kind, frozenset(senders), frozenset(recipients), sealed, body, coalition, repeatable
        )
        register(spec)
        return body

    return register_body


def body_of(kind: str, fields: Any, *, sender: str | None = None) -> Body:
    """The body of a registered ``kind`` from its map (checked: see :meth:`Body.from_body`).

    Raises:
        Rejected: ``kind`` is not registered, or ``fields`` do not match its schema.
    """
    from privgrid.wire.envelope import Rejected

    spec = KINDS.get(kind)
    if spec is None:
        raise Rejected(f"unknown message kind {kind!r}", sender)
    return spec.body_type.from_body(fields, sender=sender)


# --- set-up and control -------------------------------------------------------------------
@message(Kind.KEY, ANY, {EVERYONE}, sealed=False)
class KeyAnnouncement(Body):
    """A participant's signed, retained key announcement."""

    x25519: bytes = wire(s.X25519_PUBLIC)
    created: float = wire(s.NUMBER)
    paillier_n: bytes | None = wire(s.blob(max_len=1024), default=None)
    paillier_bits: int | None = wire(s.NON_NEGATIVE, default=None)
    key_proof: tuple[bytes, ...] | None = wire(s.blob_list(16, 1024), default=None)
    #: A restart (docs/reliability.md): the sender's incarnation (0 at first start, +1 at each
    #: restart from its checkpoint) and the last round it completed.
    incarnation: int | None = wire(s.NON_NEGATIVE, default=None)
    completed: int | None = wire(s.NON_NEGATIVE, default=None)


@message(Kind.RESYNC, ANY, ANY, sealed=False)
class Resync(Body):
    """After a peer's restart: "everything I send you from now on is fresh". The restarted
    participant ignores the sender's directed messages until this arrives (they may be stale)."""

    incarnation: int = wire(s.NON_NEGATIVE)


#: The range of a round's step exponent: privgrid.market.steps never goes beyond ±16; the
#: limit only keeps 2^e a normal float.
STEP_EXPONENT_LIMIT = 60


@message(Kind.ROUND, {MO}, {EVERYONE}, sealed=False)
class Round(Body):
    """The MO's round clock: begin this round (without the pairs removed from the market).

    ``steps``: the round's step exponent e with adaptive steps (τ·2^e, α·2^-e, σ·2^-e;
    :mod:`privgrid.market.steps`); absent with fixed steps (e = 0).
    """

    dropped: tuple[tuple[str, str], ...] | None = wire(s.Spec(s.pair_list), default=None)
    steps: int | None = wire(
        s.int_range(-STEP_EXPONENT_LIMIT, STEP_EXPONENT_LIMIT), default=None
    )


@message(Kind.INTERVAL, {MO}, {EVERYONE}, sealed=False)
class IntervalStart(Body):
    """A day over the wire (docs/feeder.md): the next market of the day begins.

    The envelope's round is the interval's *opening* round: its rounds follow it, continuing
    the day's numbering, so every message key stays unique in the day's one session.
    ``index``: the interval's number in the day's plan (1-based); ``scenario``: the SHA-256 of
    the interval's scenario file as the MO read it (every participant checks its own copy);
    ``warm``: whether each party begins from its values of the previous interval (then the
    LM's opening message brings every agent its starting charges).
    """

    index: int = wire(s.NON_NEGATIVE)
    scenario: bytes = wire(s.blob(exact=32))
    warm: bool = wire(s.BOOL)


@message(Kind.STOP, {MO}, {EVERYONE}, sealed=False)
class Stop(Body):
    converged: bool = wire(s.BOOL)
    reason: str = wire(s.TEXT)


@message(Kind.GONE, ANY, {EVERYONE}, sealed=False)
class Gone(Body):
    """A participant's last will: it left the run (sent by the broker if it vanishes)."""

    incarnation: int | None = wire(s.NON_NEGATIVE, default=None)


@message(Kind.CLOSED, {MO}, {EVERYONE}, sealed=False)
class Closed(Body):
    """The MO's last word: the run is over (block committed or not); participants may exit."""

    committed: bool = wire(s.BOOL)
    reason: str = wire(s.TEXT)


@message(Kind.VIOLATION, ANY, {MO}, sealed=True, repeatable=True)
class ViolationReport(Body):
    """A protocol violation with the offender's signed messages as evidence (a reporter may
    accuse several offenders in one round: ``repeatable``)."""

    offender: str = wire(s.ID)
    reason: str = wire(s.TEXT)
    evidence: tuple[bytes, ...] = wire(s.blob_list())


# --- plain-mode price exchange (sealed per pair) -------------------------------------------
@message(Kind.SHARE, {AGENT}, {AGENT}, sealed=True)
class Share(Body):
    """Plain mode's one message per direction and round: ``x`` = B_mn, the sender's share of
    the recipient's new price, and ``own`` = A_mn, the sender's share of its own new price
    (fixed point). The recipient adds each to its own half: it learns the sender's new price
    A_mn + B_nm, which the two-party computation reveals to it as well (docs/privacy.md)."""

    x: int = wire(s.INT64)
    own: int = wire(s.INT64)


# --- the LM leg and the MO's residuals ----------------------------------------------------
@message(Kind.TRADES, {AGENT}, {LM}, sealed=True)
class Trades(Body):
    x: tuple[int, ...] = wire(s.INT64_LIST)


@message(Kind.CHARGES, {LM}, {AGENT}, sealed=True)
class Charges(Body):
    x: tuple[int, ...] = wire(s.INT64_LIST)


@message(Kind.RESIDUALS, {AGENT}, {MO}, sealed=True)
class AgentResiduals(Body):
    """An agent's round residuals (fixed point): dual, price consensus, and reciprocity as it
    sees its pairs (needed when the LM sees no trades: masked aggregation)."""

    r_d: int = wire(s.NON_NEGATIVE)
    r_C: int = wire(s.NON_NEGATIVE)  # noqa: N815 — field names are the wire's keys
    r_P: int | None = wire(s.NON_NEGATIVE, default=None)  # noqa: N815


@message(Kind.LM_RESIDUALS, {LM}, {MO}, sealed=True)
class LmResiduals(Body):
    """The LM's round residuals (fixed point): line, and reciprocity when it sees trades."""

    r_L: int = wire(s.NON_NEGATIVE)  # noqa: N815 — field names are the wire's keys
    r_P: int | None = wire(s.NON_NEGATIVE, default=None)  # noqa: N815


# --- after the stop: what the MO needs for the results and the block ------------------------
@message(Kind.FINAL, {AGENT}, {MO}, sealed=True)
class AgentFinal(Body):
    """An agent's final report: its trades, both prices and charges per partner (fixed point,
    in its partners' order), its own KKT checks and its traffic counters."""

    P: tuple[int, ...] = wire(s.INT64_LIST)
    lam: tuple[int, ...] = wire(s.INT64_LIST)
    lam_peer: tuple[int, ...] = wire(s.INT64_LIST)
    c: tuple[int, ...] = wire(s.INT64_LIST)
    kkt: tuple[dict[str, Any], ...] = wire(s.MAP_LIST)
    stats: dict[str, float] = wire(s.NUMBER_MAP)


@message(Kind.LM_FINAL, {LM}, {MO}, sealed=True)
class LmFinal(Body):
    """The LM's final report: the line prices (fixed point), its KKT checks and counters."""

    eta_up: tuple[int, ...] = wire(s.INT64_LIST)
    eta_down: tuple[int, ...] = wire(s.INT64_LIST)
    kkt: tuple[dict[str, Any], ...] = wire(s.MAP_LIST)
    stats: dict[str, float] = wire(s.NUMBER_MAP)


# --- Paillier mode: the two-party computation per direction n→m (protocol.md §4.1) ----------
# Ciphertexts are fixed-length bytes (2|N|/8) and need no sealing; the decrypted price and its
# proof are sealed (the proof reveals x to anyone who can guess it, protocol.md §5.4).
_PAIR = s.text_list(2)


@message(Kind.SHARE_OWN, {AGENT}, {AGENT}, sealed=False)
class ShareOwn(Body):
    """c_A = E_owner(A_nm): the owner's committed share, under its own key."""

    pair: tuple[str, str] = wire(_PAIR)
    c: bytes = wire(s.blob(max_len=4096))


@message(Kind.SHARE_PEER, {AGENT}, {AGENT}, sealed=False)
class SharePeer(Body):
    """c_B = E_owner(B_mn): the peer's share, under the owner's key, after c_A."""

    pair: tuple[str, str] = wire(_PAIR)
    c: bytes = wire(s.blob(max_len=4096))


@message(Kind.PRICE_PROOF, {AGENT}, {AGENT}, sealed=True)
class PriceProof(Body):
    """x = Dec(c_A · c_B) and the proof (a, z) that the decryption is correct."""

    pair: tuple[str, str] = wire(_PAIR)
    x: bytes = wire(s.blob(max_len=2048))
    a: bytes = wire(s.blob(max_len=4096))
    z: bytes = wire(s.blob(max_len=2048))


# --- Paillier LM leg: packed ciphertexts under the LM's key, and back under the agent's -------
@message(Kind.TRADES_ENC, {AGENT}, {LM}, sealed=False)
class TradesEnc(Body):
    c: tuple[bytes, ...] = wire(s.blob_list(4096, 4096))


@message(Kind.CHARGES_ENC, {LM}, {AGENT}, sealed=False)
class ChargesEnc(Body):
    c: tuple[bytes, ...] = wire(s.blob_list(4096, 4096))


# --- the ledger: the MO's block proposal and each participant's signed vote ------------------
@message(Kind.BLOCK, {MO}, {EVERYONE}, sealed=False)
class BlockProposal(Body):
    block: bytes = wire(s.blob(max_len=1 << 20))


@message(Kind.VOTE, {AGENT, LM}, {MO}, sealed=True)
class BlockVote(Body):
    vote: bytes = wire(s.blob(max_len=1 << 20))


# --- I5 masked aggregation: masked flow shares to the LM, line prices back to each agent ------
# Both sealed: the masks hide one agent's share, not the sum, so unsealed shares would let the
# broker add them up to the line flows every round; the line prices go to each agent, sealed,
# instead of one broadcast (docs/privacy.md, "What the broker sees").
@message(Kind.FLOWS_MASKED, {AGENT}, {LM}, sealed=True)
class FlowsMasked(Body):
    y: tuple[int, ...] = wire(s.UINT64_LIST)


@message(Kind.LINE_PRICES, {LM}, {AGENT}, sealed=True)
class LinePriceUpdate(Body):
    """The round's line prices η (fixed point), per limited line, both directions."""

    up: tuple[int, ...] = wire(s.INT64_LIST)
    down: tuple[int, ...] = wire(s.INT64_LIST)


# --- the collusion experiment: colluders share on their coalition topic only (ACL) ------------
@message(Kind.COALITION_RECORD, {AGENT}, {AGENT}, sealed=True, coalition=True)
class CoalitionRecord(Body):
    """What a colluder derived of the target in round ``r`` (fixed point), for the coordinator."""

    r: int = wire(s.NON_NEGATIVE)
    price: int = wire(s.INT64)
    charge: int = wire(s.INT64)
    previous: int = wire(s.INT64)
    target: int = wire(s.INT64)
    extrapolated: int = wire(s.INT64)
    own: int = wire(s.INT64)
    new_price: int = wire(s.INT64)


@message(Kind.COALITION_ORDER, {AGENT}, {AGENT}, sealed=True, coalition=True)
class CoalitionOrder(Body):
    """The coordinator's order for round ``r``: the phase, and the price to steer to."""

    r: int = wire(s.NON_NEGATIVE)
    phase: str = wire(s.TEXT)
    price: int | None = wire(s.INT64, default=None)
