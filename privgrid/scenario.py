"""Scenario files (TOML): one source of truth for the launcher, the role processes and compose.

Parsing and validation only — no network I/O, no solver. Every error names the file, the field
and the reason, e.g. ``configs/x.toml: agents[2] (S3).a: must be > 0 (got -1.0)``; unknown keys
are errors. Checks that need the network (bus numbers, line names) live in
:mod:`privgrid.market.setup`, which reuses :class:`ScenarioError` so messages look the same;
the one exception is ``market.pairs = {nearest = k}``, which loads the network case (cheap:
shipped data) to rank sellers by electrical distance and checks the buses it needs.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from privgrid.market.fixedpoint import RESOLUTION

#: Participant ids reserved for the Line Manager and the Market Operator.
LM_ID = "LM"
MO_ID = "MO"
RESERVED_IDS = frozenset({LM_ID, MO_ID})

#: Ids travel in MQTT topics and file names: keep them to a safe alphabet.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"


@dataclass(frozen=True)
class FieldError:
    """One validation failure: which field of which file, and why."""

    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.reason}"


class ScenarioError(ValueError):
    """A scenario file is invalid. ``errors`` lists every failure found."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    @classmethod
    def single(cls, file: str | Path, field: str, reason: str) -> ScenarioError:
        return cls([FieldError(str(file), field, reason)])


class FieldValueError(ValueError):
    """Raised by a model-level check to name the field it is about (pydantic would report the
    section only): ``_pydantic_errors`` appends ``field`` to the error's location."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


#: Booleans must be TOML booleans: pydantic would otherwise read "yes" or "off" as one.
StrictBool = Annotated[bool, Field(strict=True)]


class Role(StrEnum):
    """Inferred from an agent's bounds (algorithm.md §1)."""

    SELLER = "seller"
    BUYER = "buyer"
    PROSUMER = "prosumer"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioInfo(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    seed: int = 0


class NetworkSection(_Strict):
    case: str = "ieee14"
    line_limits: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = {}


class PrivacyNoise(_Strict):
    """I6 (protocol.md §8): ã = a(1 + U[−r, r]), b̃ = b + Laplace(σ_b),
    P̃max = Pmax − U[0, w], P̃min = Pmin + U[0, w]."""

    sigma_b: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    r: Annotated[float, Field(ge=0, lt=1)] = 0.0
    w: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


class AgentSection(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    bus: int
    a: Annotated[float, Field(allow_inf_nan=False)]
    b: Annotated[float, Field(allow_inf_nan=False)]
    pmin: Annotated[float, Field(allow_inf_nan=False)]
    pmax: Annotated[float, Field(allow_inf_nan=False)]
    behaviour: Literal["honest", "lying-decryptor"] = "honest"
    #: I6 (protocol.md §8): the agent perturbs its own objective once per session.
    privacy_noise: PrivacyNoise | None = None
    #: lying-decryptor: report decrypted prices off by ``lie`` $/kW from round ``lie_from_round``.
    lie: Annotated[float, Field(allow_inf_nan=False)] = 0.05
    lie_from_round: Annotated[int, Field(ge=1)] = 1

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.upper() in RESERVED_IDS:
            raise ValueError(f"id {value!r} is reserved for the {value.upper()} process")
        return value

    @field_validator("a")
    @classmethod
    def _positive_a(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be > 0 (got {value}): the cost must be strictly convex")
        return value

    @model_validator(mode="after")
    def _behaviour_options(self) -> AgentSection:
        options = {"lie", "lie_from_round"} & self.model_fields_set
        if options and self.behaviour != "lying-decryptor":
            raise FieldValueError(
                sorted(options)[0],
                f"{sorted(options)} apply only to behaviour 'lying-decryptor' "
                f"(behaviour is {self.behaviour!r})",
            )
        if self.behaviour == "lying-decryptor" and self.lie == 0:
            raise FieldValueError("lie", "a lying-decryptor needs a non-zero lie")
        return self

    @model_validator(mode="after")
    def _bounds(self) -> AgentSection:
        if self.pmin > self.pmax:
            raise FieldValueError("pmin", f"pmin ({self.pmin}) must not exceed pmax ({self.pmax})")
        if self.pmin == 0 and self.pmax == 0:
            raise FieldValueError("pmax", "pmin = pmax = 0: the agent can neither sell nor buy")
        return self

    @property
    def role(self) -> Role:
        if self.pmin >= 0:
            return Role.SELLER
        if self.pmax <= 0:
            return Role.BUYER
        return Role.PROSUMER


class NearestPairs(_Strict):
    """``pairs = {nearest = k}``: each buyer trades with its k electrically nearest sellers.

    Distance is the DC Thevenin reactance between the two buses
    (:mod:`privgrid.grid.distance`); see :func:`nearest_pairs` for ties, prosumers and sellers
    that no buyer picked.
    """

    nearest: int

    @field_validator("nearest")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be ≥ 1 (got {value}): every buyer needs a seller")
        return value


#: Tags of the ``market.pairs`` union; :func:`_loc_to_field` leaves them out of field names.
_PAIRS_TAG = "pairs:"


def _pairs_kind(value: Any) -> str | None:
    """Pick the one ``market.pairs`` form to validate against, so errors name only that one."""
    if isinstance(value, str):
        return f"{_PAIRS_TAG}name"
    if isinstance(value, dict | NearestPairs):
        return f"{_PAIRS_TAG}nearest"
    if isinstance(value, list | tuple):
        return f"{_PAIRS_TAG}list"
    return None


PairsSpec = Annotated[
    Annotated[Literal["sellers-buyers"], Tag(f"{_PAIRS_TAG}name")]
    | Annotated[list[tuple[str, str]], Tag(f"{_PAIRS_TAG}list")]
    | Annotated[NearestPairs, Tag(f"{_PAIRS_TAG}nearest")],
    Discriminator(
        _pairs_kind,
        custom_error_type="pairs_form",
        custom_error_message="must be 'sellers-buyers', a list of [seller, buyer] pairs "
        "or {nearest = k}",
    ),
]


#: The smallest stopping tolerance the fixed-point wire format allows (algorithm.md §7).
MIN_EPSILON = 100 * RESOLUTION


class MarketSection(_Strict):
    """Negotiation parameters. The step defaults are the fastest safe settings measured
    (docs/market.md "Step sizes", docs/performance.md); algorithm.md §5.1's published ones
    are ``steps = "fixed"``, ``tau = 1``, ``alpha = 0.2``, ``rho = 1``."""

    pairs: PairsSpec = "sellers-buyers"
    alpha: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.225
    beta: Annotated[float, Field(gt=0, lt=1)] = 0.25
    tau: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.0
    rho: Annotated[float, Field(ge=1, lt=2)] = 1.5
    #: "adaptive": the MO rescales τ, α, σ during the run (docs/market.md "Step sizes");
    #: "fixed": constant steps and σ by algorithm.md §5.1 (the published method).
    steps: Literal["adaptive", "fixed"] = "adaptive"
    lambda0: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    epsilon_p: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-4
    epsilon_lambda: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-4
    max_rounds: Annotated[int, Field(ge=1)] = 5000

    @field_validator("epsilon_p", "epsilon_lambda")
    @classmethod
    def _above_resolution(cls, value: float) -> float:
        """algorithm.md §7: values cross processes rounded to q; keep q ≤ ε/100, else the
        rounding noise is as large as the stopping test and the run never stops."""
        if 0 < value < MIN_EPSILON:
            raise ValueError(
                f"must be ≥ {MIN_EPSILON:.3g} (got {value:g}): 100 × the fixed-point resolution "
                "q = 2^-32 of every value that crosses a process (algorithm.md §7: q ≤ ε/100)"
            )
        return value

    @model_validator(mode="after")
    def _convergence_condition(self) -> MarketSection:
        # Chambolle–Pock: τ·max(2α, 2σ‖G‖²) < 1 (adaptive steps; the sum τ(2α + 2σ‖G‖²) < 1
        # with fixed steps). The LM picks σ inside its part; what remains for the scenario is
        # τα < ½, which the adaptive steps' rescaling τ·2^e, α·2^-e keeps (docs/market.md).
        if self.tau * self.alpha >= 0.5:
            raise FieldValueError(
                "tau",
                f"tau * alpha = {self.tau * self.alpha:g} must be < 0.5 "
                "(convergence condition of algorithm.md §5.1)",
            )
        return self


class PrivacySection(_Strict):
    """How prices and private values travel (protocol.md)."""

    mode: Literal["plain", "paillier"] = "paillier"
    key_bits: Annotated[int, Field(ge=1024, le=8192)] = 2048
    insecure_test_keys: StrictBool = False
    #: What a failed check against a partner does: end the run naming the offender, or
    #: remove the pair from the market and go on.
    on_violation: Literal["abort", "drop_pair"] = "abort"
    #: I4 (protocol.md §4.4): after each round, check the pair's price invariant and that the
    #: partner's derived trade lies in its registered range. Stops price injection; free.
    pair_checks: StrictBool = True
    #: How trades reach the LM: "masked" (I5: masked aggregation, the LM learns line flows
    #: only), "paillier" (the published design: trades under the LM's key), "sealed".
    lm_leg: Literal["masked", "paillier", "sealed"] = "masked"
    #: Paillier mode: rounds' worth of precomputed obfuscators r^N and proof commitments per
    #: partner, filled before the session (offline) and topped up in idle time; 0: none
    #: (docs/performance.md says what they buy). Capped at ``market.max_rounds``.
    pool_rounds: Annotated[int, Field(ge=0)] = 0
    #: Paillier mode: check each decryption proof when it arrives ("every_round"), or check
    #: a partner's proofs together in idle time and before the final report ("batch"; a lie
    #: is still caught before anything is committed, but after the round it was told in).
    verify: Literal["every_round", "batch"] = "every_round"
    #: Paillier mode: worker threads per agent process for the heavy steps (decrypt + prove,
    #: a proof's check), so one pair's crypto does not wait for another's; 0: all on the
    #: event loop. One pool per process, shared by the agents it hosts (docs/performance.md).
    crypto_threads: Annotated[int, Field(ge=0, le=64)] = 0

    @model_validator(mode="after")
    def _leg_needs_keys(self) -> PrivacySection:
        if self.lm_leg == "paillier" and self.mode != "paillier":
            raise FieldValueError("lm_leg", "lm_leg = 'paillier' needs mode = 'paillier'")
        return self

    @model_validator(mode="after")
    def _key_size(self) -> PrivacySection:
        if self.key_bits < 2048 and not self.insecure_test_keys:
            raise FieldValueError(
                "key_bits",
                f"key_bits = {self.key_bits} is below 2048; set insecure_test_keys = true "
                "to allow small test keys",
            )
        return self


class TimeoutsSection(_Strict):
    """Seconds, and the failure policy. ``start``: every participant announced; ``round``: one
    round's messages; ``finish``: the final reports after the stop. ``on_missing``: what a
    participant leaving the run does — "abort" ends the run naming it; "wait" pauses the round
    clock until it rejoins from its checkpoint (``--state``), for at most ``missing`` seconds
    (docs/reliability.md)."""

    start: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    round: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    finish: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0
    on_missing: Literal["abort", "wait"] = "abort"
    missing: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 120.0


class AttackSection(_Strict):
    """The collusion experiment (protocol.md §9.1)."""

    target: str
    colluders: Annotated[list[str], Field(min_length=1)]
    strategy: Literal["passive", "probe"] = "passive"
    start_round: Annotated[int, Field(ge=1)] = 20
    ramp_step: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.25
    plateau_window: Annotated[int, Field(ge=2)] = 8
    plateau_tol: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-6
    hold_rounds: Annotated[int, Field(ge=2)] = 25
    probe_levels: Annotated[int, Field(ge=2)] = 4
    probe_prices: list[float] | None = None
    shares: Literal["compliant", "free"] = "compliant"
    release: StrictBool = True
    compare_honest: StrictBool = False
    coalition: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "coalition"


class MarketOperatorSection(_Strict):
    """The MO's behaviour: honest, or proposing a bad block (the Proof-of-Solution experiment)."""

    behaviour: Literal["honest", "tamper-trade", "tamper-price", "suboptimal"] = "honest"


class LedgerSection(_Strict):
    """Accept votes a block needs: ``"all"`` participants (default) or a number."""

    quorum: Literal["all"] | int = "all"

    @field_validator("quorum", mode="before")
    @classmethod
    def _quorum(cls, value: Any) -> Any:
        """One message for both forms (pydantic would report each branch of the union)."""
        if value == "all" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"must be 'all' or a whole number ≥ 1 (got {value!r})")


class Scenario(_Strict):
    """A validated scenario. ``source`` is the file it came from (for paths and messages)."""

    scenario: ScenarioInfo
    network: NetworkSection = NetworkSection()
    agents: Annotated[list[AgentSection], Field(min_length=2)]
    market: MarketSection = MarketSection()
    privacy: PrivacySection = PrivacySection()
    timeouts: TimeoutsSection = TimeoutsSection()
    market_operator: MarketOperatorSection = MarketOperatorSection()
    ledger: LedgerSection = LedgerSection()
    attack: AttackSection | None = None
    source: Path = Field(default=Path("<memory>"), exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> Scenario:
        seen: set[str] = set()
        for i, agent in enumerate(self.agents):
            if agent.id in seen:
                raise FieldValueError(f"agents.{i}.id", f"duplicate agent id {agent.id!r}")
            seen.add(agent.id)
        return self

    @model_validator(mode="after")
    def _lies_need_proofs(self) -> Scenario:
        # Plain mode has no decryption to lie about: the agent would silently stay honest.
        for i, agent in enumerate(self.agents):
            if agent.behaviour == "lying-decryptor" and self.privacy.mode != "paillier":
                raise FieldValueError(
                    f"agents.{i}.behaviour",
                    "behaviour 'lying-decryptor' needs privacy.mode = 'paillier' "
                    f"(mode is {self.privacy.mode!r}: there is no decryption to lie about)",
                )
        return self

    # --- derived, public structure -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def agent_ids(self) -> list[str]:
        return [a.id for a in self.agents]

    def agent(self, agent_id: str) -> AgentSection:
        for a in self.agents:
            if a.id == agent_id:
                return a
        raise KeyError(agent_id)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Trading pairs in canonical order (see :func:`resolve_pairs`).

        ``{nearest = k}`` needs the network: it is loaded here (the shipped data of a named
        case loads in milliseconds) and the result is cached per agent set and k.
        """
        spec = self.market.pairs
        if isinstance(spec, NearestPairs):
            members = tuple((a.id, a.bus, a.role) for a in self.agents)
            pairs = _nearest_cached(self.network.case, self.source.parent, members, spec.nearest)
            return list(pairs)
        return resolve_pairs(self.agents, spec)


def _can_trade(first: Role, second: Role) -> bool:
    return Role.PROSUMER in (first, second) or {first, second} == {Role.SELLER, Role.BUYER}


def resolve_pairs(
    agents: Sequence[AgentSection],
    spec: str | Sequence[tuple[str, str]] | NearestPairs,
    distance: Callable[[int, int], float] | None = None,
) -> list[tuple[str, str]]:
    """Trading pairs, each ``(first, second)`` with the seller first when there is one.

    ``"sellers-buyers"``: every seller with every buyer, and every prosumer with every other
    agent, in the order the agents are listed (for the paper case: S1-B1, S1-B2, …, S4-B3).
    ``{nearest = k}``: :func:`nearest_pairs` with ``distance`` between two bus numbers.
    """
    role = {a.id: a.role for a in agents}
    if isinstance(spec, NearestPairs):
        if distance is None:
            raise ValueError("pairs = {nearest = k} needs the network's bus distance")
        members = [(a.id, a.bus, a.role) for a in agents]
        raw = nearest_pairs(members, spec.nearest, distance)
    elif isinstance(spec, str):
        raw = [
            (agents[i].id, agents[j].id)
            for i in range(len(agents))
            for j in range(i + 1, len(agents))
            if _can_trade(agents[i].role, agents[j].role)
        ]
    else:
        raw = [tuple(p) for p in spec]
    return _seller_first(raw, role)


def _seller_first(raw: Sequence[tuple[str, str]], role: dict[str, Role]) -> list[tuple[str, str]]:
    return [(m, n) if role[n] == Role.BUYER and role[m] == Role.SELLER else (n, m) for n, m in raw]


#: What the pairing needs of an agent: its id, bus number and role.
Member = tuple[str, int, Role]


def nearest_pairs(
    members: Sequence[Member], k: int, distance: Callable[[int, int], float]
) -> list[tuple[str, str]]:
    """Sparse pairing by electrical distance (``pairs = {nearest = k}``).

    - Every buyer trades with the k sellers nearest to its bus.
    - A prosumer is on both sides: it picks its k nearest among sellers and the other
      prosumers, and buyers and prosumers may pick it.
    - A seller that no one picked trades with its single nearest buyer (or prosumer), so
      every seller has a partner; that buyer then has more than k partners.
    - Ties (equal distance, e.g. agents on one bus) go to the smaller id (string order).
    - Each pair appears once, ordered as ``"sellers-buyers"`` orders them: by the position
      of its agents in the file. With k = number of sellers and no prosumers, the result is
      exactly ``"sellers-buyers"``.

    ``distance(bus_i, bus_j)`` must be symmetric (see :mod:`privgrid.grid.distance`).
    """
    order = {m[0]: i for i, m in enumerate(members)}
    supply = [m for m in members if m[2] != Role.BUYER]
    demand = [m for m in members if m[2] != Role.SELLER]

    def ranked(member: Member, candidates: list[Member]) -> list[str]:
        others = [c for c in candidates if c[0] != member[0]]
        return [c[0] for c in sorted(others, key=lambda c: (distance(member[1], c[1]), c[0]))]

    chosen: set[tuple[str, str]] = set()

    def add(n: str, m: str) -> None:
        chosen.add((n, m) if order[n] < order[m] else (m, n))

    for buyer in demand:
        for seller in ranked(buyer, supply)[:k]:
            add(buyer[0], seller)
    paired = {x for pair in chosen for x in pair}
    for seller in supply:
        if seller[2] == Role.SELLER and seller[0] not in paired and demand:
            add(seller[0], ranked(seller, demand)[0])
    return sorted(chosen, key=lambda p: (order[p[0]], order[p[1]]))


def nearest_limit(roles: Sequence[Role]) -> int:
    """The largest k every buyer (and prosumer) can be given: the candidates it picks from."""
    supply = sum(r != Role.BUYER for r in roles)
    return supply - 1 if Role.PROSUMER in roles else supply


@functools.lru_cache(maxsize=32)
def _nearest_cached(
    case: str,
    base_dir: Path,
    members: tuple[Member, ...],
    k: int,
) -> tuple[tuple[str, str], ...]:
    """:func:`resolve_pairs` for ``{nearest = k}``, once per network, agent set and k.

    Every process resolves the pairs itself; this keeps it to one distance computation each.
    """
    from privgrid.grid.cases import load_network
    from privgrid.grid.distance import electrical_distances

    network = load_network(case, base_dir)
    D = electrical_distances(network)

    def distance(bus_i: int, bus_j: int) -> float:
        return float(D[network.bus_index(bus_i), network.bus_index(bus_j)])

    raw = nearest_pairs(members, k, distance)
    return tuple(_seller_first(raw, {m[0]: m[2] for m in members}))


def _nearest_errors(scenario: Scenario, spec: NearestPairs, file: str) -> list[FieldError]:
    """``{nearest = k}``: k within what every buyer can pick, and a network that knows the buses.

    The bus check repeats :func:`privgrid.market.setup.build_setup`'s, because the pairs are
    needed (and the network loaded) before that runs.
    """
    from privgrid.grid.cases import CaseError, load_network
    from privgrid.grid.distance import electrical_distances

    agents = scenario.agents
    limit = nearest_limit([a.role for a in agents])
    where = "market.pairs.nearest"
    prosumers = any(a.role == Role.PROSUMER for a in agents)
    if not any(a.role != Role.SELLER for a in agents):
        return [FieldError(file, where, "there are no buyers or prosumers to pick sellers")]
    if limit < 1:
        return [FieldError(file, where, "there are no sellers (or other prosumers) to pick")]
    if spec.nearest > limit:
        who = "sellers and prosumers, less itself," if prosumers else "sellers"
        return [
            FieldError(
                file,
                where,
                f"must be ≤ {limit}, the number of {who} a buyer can pick from "
                f"(got {spec.nearest})",
            )
        ]
    try:
        network = load_network(scenario.network.case, scenario.source.parent)
        electrical_distances(network)
    except (CaseError, ValueError) as exc:
        return [FieldError(file, "network.case", f"{exc} (needed by {where})")]
    return [
        FieldError(
            file,
            f"agents[{i}] ({a.id}).bus",
            f"bus {a.bus} is not in case {scenario.network.case!r} "
            f"(buses {network.buses[0]}..{network.buses[-1]})",
        )
        for i, a in enumerate(agents)
        if not network.has_bus(a.bus)
    ]


def _pairs_errors(scenario: Scenario, file: str) -> list[FieldError]:
    """Explicit pair lists: known ids, no self-pairs or duplicates, roles that can trade;
    ``{nearest = k}``: a k every buyer can have and buses the network knows. Then every agent
    must have a partner."""
    errors: list[FieldError] = []
    spec = scenario.market.pairs
    role = {a.id: a.role for a in scenario.agents}
    if isinstance(spec, NearestPairs):
        errors = _nearest_errors(scenario, spec, file)
    elif not isinstance(spec, str):
        seen: set[frozenset[str]] = set()
        for i, (n, m) in enumerate(spec):
            where = f"market.pairs[{i}]"
            unknown = [x for x in (n, m) if x not in role]
            if unknown:
                errors.append(FieldError(file, where, f"unknown agent id(s) {unknown}"))
                continue
            if n == m:
                errors.append(FieldError(file, where, f"agent {n!r} cannot trade with itself"))
            elif frozenset((n, m)) in seen:
                errors.append(FieldError(file, where, f"duplicate pair {n}-{m}"))
            elif not _can_trade(role[n], role[m]):
                errors.append(
                    FieldError(file, where, f"{n} and {m} are both {role[n]}s: they cannot trade")
                )
            seen.add(frozenset((n, m)))
    if errors:
        return errors
    partners: dict[str, list[str]] = {a: [] for a in role}
    for n, m in scenario.pairs:
        partners[n].append(m)
        partners[m].append(n)
    for i, agent in enumerate(scenario.agents):
        if not partners[agent.id]:
            errors.append(FieldError(file, f"agents[{i}] ({agent.id})", "has no trading partner"))
    return errors


def _reachable_errors(scenario: Scenario, file: str) -> list[FieldError]:
    """Per-agent feasibility: can the partners absorb at least the agent's minimum?

    A partner m can take at most ``|Pmin_m|`` from a seller (its largest demand) and give at
    most ``Pmax_m`` to a buyer; an agent whose required interval lies outside what its
    partners can reach can never clear. Line limits are checked later, with the network.
    """
    agents = {a.id: a for a in scenario.agents}
    partners: dict[str, list[str]] = {a: [] for a in agents}
    for n, m in scenario.pairs:
        partners[n].append(m)
        partners[m].append(n)
    errors = []
    # With sparse pairing the fix is often a larger k, not other bounds: say so.
    hint = (
        " (raise market.pairs.nearest)" if isinstance(scenario.market.pairs, NearestPairs) else ""
    )
    for i, agent in enumerate(scenario.agents):
        # Most the partners can buy from this agent / sell to it.
        can_buy = sum(max(0.0, -agents[m].pmin) for m in partners[agent.id])
        can_sell = sum(max(0.0, agents[m].pmax) for m in partners[agent.id])
        where = f"agents[{i}] ({agent.id})"
        if agent.pmin > can_buy + 1e-12:
            errors.append(
                FieldError(
                    file,
                    f"{where}.pmin",
                    f"must sell at least {agent.pmin:g} kW but its partners "
                    f"{partners[agent.id]} can buy at most {can_buy:g} kW{hint}",
                )
            )
        if -agent.pmax > can_sell + 1e-12:
            errors.append(
                FieldError(
                    file,
                    f"{where}.pmax",
                    f"must buy at least {-agent.pmax:g} kW but its partners "
                    f"{partners[agent.id]} can sell at most {can_sell:g} kW{hint}",
                )
            )
    return errors


def _attack_errors(scenario: Scenario, file: str) -> list[FieldError]:
    """The coalition must be real neighbours of a real target (protocol.md §9.1)."""
    attack = scenario.attack
    if attack is None:
        return []
    ids = set(scenario.agent_ids)
    if attack.target not in ids:
        return [FieldError(file, "attack.target", f"unknown agent {attack.target!r}")]
    neighbours = {m for n, m in scenario.pairs if n == attack.target}
    neighbours |= {n for n, m in scenario.pairs if m == attack.target}
    errors = []
    for i, colluder in enumerate(attack.colluders):
        where = f"attack.colluders[{i}]"
        if colluder == attack.target:
            errors.append(FieldError(file, where, f"{colluder} is the target itself"))
        elif colluder not in ids:
            errors.append(FieldError(file, where, f"unknown agent {colluder!r}"))
        elif colluder not in neighbours:
            errors.append(
                FieldError(
                    file, where, f"{colluder} does not trade with the target {attack.target}"
                )
            )
    if len(set(attack.colluders)) != len(attack.colluders):
        errors.append(FieldError(file, "attack.colluders", "a colluder is listed twice"))
    if attack.probe_prices is not None and len(attack.probe_prices) < 2:
        errors.append(FieldError(file, "attack.probe_prices", "give at least two prices"))
    return errors


def _loc_to_field(loc: Sequence[int | str], data: dict[str, Any]) -> str:
    """Render a pydantic error location as ``agents[2] (S3).a`` — index plus the agent's id."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            try:
                node = node[item]
                if isinstance(node, dict) and "id" in node:
                    label += f" ({node['id']})"
            except (IndexError, KeyError, TypeError):
                node = None
            if parts:
                parts[-1] += label
            else:
                parts.append(label)
        else:
            if item.startswith(("function-after", _PAIRS_TAG)) or item in {
                "tuple[str, str]",
                "list[...]",
            }:
                continue
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "<top level>"


def _shown(value: Any) -> bool:
    """Worth quoting in a message: a short scalar (not a whole table or list)."""
    return isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) < 60)


def _pydantic_errors(exc: ValidationError, data: dict[str, Any], file: str) -> list[FieldError]:
    errors = []
    for err in exc.errors():
        reason = err["msg"].removeprefix("Value error, ")
        loc = list(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, FieldValueError):  # a model check that knows its field
            loc += [int(x) if x.isdigit() else x for x in cause.field.split(".")]
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        elif err["type"] == "missing":
            reason = "required field is missing"
        else:
            if err["type"] == "model_type":  # pydantic would name our class, not a TOML form
                reason = "must be a table"
            elif err["type"] == "list_type" and loc == ["agents"]:
                reason = "must be an array of tables ([[agents]])"
            if "(got " not in reason and _shown(err.get("input")):
                reason += f" (got {err['input']!r})"
        errors.append(FieldError(file, _loc_to_field(loc, data), reason))
    # A union field reports one error per branch; keep one line per field.
    unique = {(e.field, e.reason): e for e in errors}
    return list(unique.values())


def parse_scenario(data: dict[str, Any], file: str | Path = "<memory>") -> Scenario:
    """Validate an already-parsed TOML document (tests and generated scenarios use this)."""
    file = str(file)
    try:
        scenario = Scenario.model_validate({**data, "source": Path(file)})
    except ValidationError as exc:
        raise ScenarioError(_pydantic_errors(exc, data, file)) from None
    errors = _pairs_errors(scenario, file)
    if not errors:
        errors = _reachable_errors(scenario, file) + _attack_errors(scenario, file)
    if errors:
        raise ScenarioError(errors)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise :class:`ScenarioError` naming file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError.single(path, "<file>", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError.single(path, "<syntax>", f"invalid TOML: {exc}") from None
    if "source" in data:
        raise ScenarioError.single(path, "source", "unknown key")
    return parse_scenario(data, path)
