"""From a validated scenario to the market's structure: the trade graph and the line model.

The :class:`TradeGraph` is public and needs no network, so agent processes can build it
cheaply. :class:`MarketSetup` adds the network (PTDF, limited lines, the LM step σ) and checks
the scenario against it (bus numbers, line names), reporting errors like the scenario loader.
Private agent data (cost, bounds) is kept apart in :func:`agent_costs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from privgrid.grid.cases import CaseError, load_network
from privgrid.grid.network import Network
from privgrid.grid.ptdf import bilateral_ptdf, injection_shift_factors
from privgrid.market.agent_step import AgentCost
from privgrid.market.line_step import lm_step_size
from privgrid.market.pairs import Role
from privgrid.scenario import FieldError, Scenario, ScenarioError


@dataclass(frozen=True)
class TradeGraph:
    """Who trades with whom, and the canonical order of the trade vector.

    Pair p = (first, second) owns trades ``2p`` (first's trade with second) and ``2p+1``
    (second's trade with first); ``mirror[t]`` is the other side of trade t. An agent's
    ``slots`` are its trade indices in ascending order; its partners follow the same order.
    """

    agent_ids: tuple[str, ...]
    roles: tuple[Role, ...]
    pairs: tuple[tuple[int, int], ...]
    owner: np.ndarray
    partner: np.ndarray
    mirror: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    slots: tuple[np.ndarray, ...]

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> TradeGraph:
        ids = tuple(scenario.agent_ids)
        index = {a: i for i, a in enumerate(ids)}
        roles = tuple(a.role for a in scenario.agents)
        pairs = tuple((index[n], index[m]) for n, m in scenario.pairs)
        owner = np.array([x for n, m in pairs for x in (n, m)], dtype=np.int64)
        partner = np.array([x for n, m in pairs for x in (m, n)], dtype=np.int64)
        mirror = np.arange(len(owner), dtype=np.int64) ^ 1  # 2p ↔ 2p+1
        lo = np.array([0.0 if roles[o] == Role.SELLER else -np.inf for o in owner])
        hi = np.array([0.0 if roles[o] == Role.BUYER else np.inf for o in owner])
        slots = tuple(np.flatnonzero(owner == i) for i in range(len(ids)))
        return cls(ids, roles, pairs, owner, partner, mirror, lo, hi, slots)

    @property
    def n_agents(self) -> int:
        return len(self.agent_ids)

    @property
    def n_trades(self) -> int:
        return len(self.owner)

    def index(self, agent_id: str) -> int:
        return self.agent_ids.index(agent_id)

    def partners_of(self, agent: int) -> list[str]:
        """Partner ids of ``agent`` in slot order."""
        return [self.agent_ids[m] for m in self.partner[self.slots[agent]]]

    @cached_property
    def _slot_of(self) -> dict[tuple[int, int], int]:
        return {
            (int(o), int(p)): t
            for t, (o, p) in enumerate(zip(self.owner, self.partner, strict=True))
        }

    def trade(self, owner: str, partner: str) -> int:
        """Index of ``owner``'s trade with ``partner``."""
        return self._slot_of[(self.index(owner), self.index(partner))]


@dataclass(frozen=True)
class MarketSetup:
    """Public market structure with the network: everything the LM and the MO need."""

    scenario: Scenario
    graph: TradeGraph
    network: Network
    ptdf: np.ndarray  # φ, all branches × trades (owner sells, partner receives)
    limited: np.ndarray  # branch indices with a limit, in network order
    fmax: np.ndarray  # their limits, kW
    sigma: float  # LM step σ₀ at step exponent 0 (line_step.lm_step_size)

    @property
    def G(self) -> np.ndarray:
        """``g_l,nm = ½ φ_l,nm`` for the limited lines: ``F_L = G P``."""
        G: np.ndarray = 0.5 * self.ptdf[self.limited]
        return G

    @property
    def line_names(self) -> list[str]:
        return self.network.branch_names

    def flows(self, trades: np.ndarray) -> np.ndarray:
        """Flows on every branch, ``F = ½ φ P`` (exact DC flows when trades are reciprocal)."""
        flows: np.ndarray = 0.5 * self.ptdf @ trades
        return flows


def agent_costs(scenario: Scenario) -> dict[str, AgentCost]:
    """Each agent's true private data. Only the agent itself (and the simulation's evaluator)
    uses it."""
    return {a.id: AgentCost(a.a, a.b, a.pmin, a.pmax) for a in scenario.agents}


def played_cost(scenario: Scenario, agent: str) -> AgentCost:
    """The cost an agent plays: its true one, or its I6-perturbed one (``privacy_noise``)."""
    from privgrid.market.perturb import perturb, session_seed

    spec = scenario.agent(agent)
    true = AgentCost(spec.a, spec.b, spec.pmin, spec.pmax)
    if spec.privacy_noise is None:
        return true
    return perturb(true, spec.privacy_noise, session_seed(scenario.scenario.seed, agent))


def played_costs(scenario: Scenario) -> dict[str, AgentCost]:
    return {a: played_cost(scenario, a) for a in scenario.agent_ids}


def trade_ranges(scenario: Scenario) -> dict[str, tuple[float, float]]:
    """Each agent's range for a single trade, from its registered bounds (public: the genesis
    block holds them): a seller's trade in [0, Pmax], a buyer's in [Pmin, 0]; a prosumer's is
    not bounded. The pair checks (I4) bound a partner's derived trade by it.

    Why a prosumer's is open: its bounds limit the *sum* of its trades, and a prosumer may buy
    from one partner more than its Pmin allows while it sells to another (it passes energy
    along: on a feeder's households, honest converged trades do that by several kW). A seller's
    trades all have one sign, so each lies within its sum's bounds; so do a buyer's."""
    ranges = {}
    for a in scenario.agents:
        lo = 0.0 if a.role == Role.SELLER else a.pmin if a.role == Role.BUYER else -np.inf
        hi = 0.0 if a.role == Role.BUYER else a.pmax if a.role == Role.SELLER else np.inf
        ranges[a.id] = (lo, hi)
    return ranges


def build_setup(scenario: Scenario) -> MarketSetup:
    """Load the network and check the scenario against it (bus numbers, line names)."""
    file = str(scenario.source)
    try:
        network = load_network(scenario.network.case, scenario.source.parent)
    except CaseError as exc:
        raise ScenarioError.single(file, "network.case", str(exc)) from None
    errors = [
        FieldError(
            file,
            f"agents[{i}] ({a.id}).bus",
            f"bus {a.bus} is not in case {scenario.network.case!r} "
            f"(buses {network.buses[0]}..{network.buses[-1]})",
        )
        for i, a in enumerate(scenario.agents)
        if not network.has_bus(a.bus)
    ]
    errors += [
        FieldError(
            file,
            f"network.line_limits.{name!r}",
            f"no line {name!r} in case {scenario.network.case!r}; lines are named "
            "'<from>-<to>' by bus number (e.g. '2-3', '4-5#2' for a parallel line)",
        )
        for name in scenario.network.line_limits
        if not network.has_branch(name)
    ]
    if errors:
        raise ScenarioError(errors)
    graph = TradeGraph.from_scenario(scenario)
    isf = injection_shift_factors(network)
    bus_col = np.array([network.bus_index(a.bus) for a in scenario.agents], dtype=np.int64)
    ptdf = bilateral_ptdf(isf, bus_col[graph.owner], bus_col[graph.partner])
    limits = {network.resolve_branch(k): v for k, v in scenario.network.line_limits.items()}
    if len(limits) < len(scenario.network.line_limits):
        raise ScenarioError.single(
            file, "network.line_limits", "the same line is listed twice (both orientations)"
        )
    limited = np.array(sorted(network.branch_index(str(k)) for k in limits), dtype=np.int64)
    fmax = np.array([limits[network.branches[i].name] for i in limited], dtype=np.float64)
    market = scenario.market
    sigma = lm_step_size(0.5 * ptdf[limited], market.tau, market.alpha, market.steps)
    return MarketSetup(scenario, graph, network, ptdf, limited, fmax, sigma)
