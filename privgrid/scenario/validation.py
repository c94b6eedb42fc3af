"""From a TOML document to a validated :class:`~privgrid.scenario.schema.Scenario`, or a
:class:`~privgrid.scenario.errors.ScenarioError` listing every failure.

Two passes: the schema's own checks (pydantic, one section at a time), then the checks that
need the whole, derived scenario — the trading pairs, what an agent's partners can absorb,
the collusion coalition. They are here, apart from the models, because they read derived
structure (``Scenario.pairs``) that only exists once every section has validated.

Parsing and validation only — no network I/O, no solver. Checks that need the network (bus
numbers, line names) live in :mod:`privgrid.market.setup`, which reuses :class:`ScenarioError`
so messages look the same; the one exception is ``market.pairs = {nearest = k}``, which loads
the network case (cheap: shipped data) to rank sellers by electrical distance and checks the
buses it needs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from privgrid.grid.cases import CaseError, load_network
from privgrid.grid.distance import electrical_distances
from privgrid.market.pairs import Role, can_trade, nearest_limit
from privgrid.scenario.errors import FieldError, ScenarioError, pydantic_errors
from privgrid.scenario.schema import NearestPairs, Scenario


def _nearest_errors(scenario: Scenario, spec: NearestPairs, file: str) -> list[FieldError]:
    """``{nearest = k}``: k within what every buyer can pick, and a network that knows the buses.

    The bus check repeats :func:`privgrid.market.setup.build_setup`'s, because the pairs are
    needed (and the network loaded) before that runs.
    """
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
            elif not can_trade(role[n], role[m]):
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


def parse_scenario(data: dict[str, Any], file: str | Path = "<memory>") -> Scenario:
    """Validate an already-parsed TOML document (tests and generated scenarios use this)."""
    file = str(file)
    try:
        scenario = Scenario.model_validate({**data, "source": Path(file)})
    except ValidationError as exc:
        raise ScenarioError(pydantic_errors(exc, data, file)) from None
    errors = _pairs_errors(scenario, file)
    if not errors:
        errors = _reachable_errors(scenario, file) + _attack_errors(scenario, file)
    if errors:
        raise ScenarioError(errors)
    return scenario


def read_toml(path: str | Path) -> dict[str, Any]:
    """A scenario file's TOML, or :class:`ScenarioError` naming the file."""
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
    return data


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise :class:`ScenarioError` naming file and field."""
    path = Path(path)
    data = read_toml(path)
    if "day" in data:  # privgrid/feeder/schema.py reads these
        raise ScenarioError.single(
            path,
            "day",
            "a day on a feeder ([day]) is cleared by `privgrid solve FILE --out DIR` (in "
            "process) or `privgrid run FILE` (over the wire); each of its "
            "intervals/NNNN/scenario.toml is an ordinary scenario",
        )
    return parse_scenario(data, path)
