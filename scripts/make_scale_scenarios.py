"""Generate the seeded scale scenarios in configs/ (see SPECS for the list).

Random but fixed agent sets: half sellers, half buyers on random buses. Pairing is either
random (each buyer trades with k random sellers, every seller gets at least one buyer; written
out as an explicit pair list) or ``pairs = {nearest = k}`` (each buyer with its k electrically
nearest sellers, resolved from the network by every process). Line limits are set below the
unconstrained flows of the most loaded lines, so they bind. A scenario is kept only if it is
feasible, the limits bind at the centralised optimum and the negotiation converges.

    python scripts/make_scale_scenarios.py                    # rewrite every file
    python scripts/make_scale_scenarios.py --only ieee118-500 # just one
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from privgrid.grid.cases import load_network  # noqa: E402
from privgrid.market.central import InfeasibleMarketError, solve_central  # noqa: E402
from privgrid.market.negotiation import negotiate  # noqa: E402
from privgrid.market.setup import agent_costs, build_setup  # noqa: E402
from privgrid.scenario import ScenarioError, parse_scenario  # noqa: E402


@dataclass(frozen=True)
class Spec:
    name: str
    case: str
    agents: int
    sellers_per_buyer: int
    limits: int
    seed: int
    note: str
    #: ``pairs = {nearest = sellers_per_buyer}`` instead of a random explicit pair list.
    nearest: bool = False
    #: Extra sections written as they are (e.g. privacy and timeouts of the 500-agent case).
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)


SPECS = [
    Spec("ieee30-40", "ieee30", 40, 5, 3, 30, "40 agents, 100 pairs, 3 binding line limits"),
    Spec("ieee118-100", "ieee118", 100, 4, 4, 118, "100 agents, ~200 pairs, 4 binding limits"),
    Spec(
        "ieee118-100-nearest",
        "ieee118",
        100,
        3,
        4,
        118,
        "100 agents, each buyer with its 3 electrically nearest sellers, 4 binding limits",
        nearest=True,
    ),
    Spec(
        "ieee118-500",
        "ieee118",
        500,
        3,
        4,
        500,
        "500 agents, plain mode, each buyer with its 3 nearest sellers, 4 binding limits",
        nearest=True,
        # Masked aggregation needs a mask key with every other agent (n² key agreements and
        # n·(n−1) HMACs per round); at 500 agents the sealed LM leg keeps the run tractable.
        extra={
            "privacy": {"mode": "plain", "lm_leg": "sealed"},
            "timeouts": {"start": 300.0, "round": 120.0, "finish": 120.0},
        },
    ),
]


def draw(spec: Spec, attempt: int) -> dict:
    rng = np.random.default_rng([spec.seed, attempt])
    buses = np.array(load_network(spec.case).buses)
    half = spec.agents // 2
    agents = []
    for i in range(half):
        pmin = round(float(rng.uniform(0.0, 1.0)), 3)
        agents.append(
            {
                "id": f"S{i + 1}",
                "bus": int(rng.choice(buses)),
                "a": round(float(rng.uniform(0.03, 0.08)), 4),
                "b": round(float(rng.uniform(0.5, 1.5)), 3),
                "pmin": pmin,
                "pmax": round(pmin + float(rng.uniform(3.0, 7.0)), 3),
            }
        )
    for i in range(spec.agents - half):
        pmax = -round(float(rng.uniform(0.0, 1.0)), 3)
        agents.append(
            {
                "id": f"B{i + 1}",
                "bus": int(rng.choice(buses)),
                "a": round(float(rng.uniform(0.03, 0.08)), 4),
                "b": round(float(rng.uniform(2.5, 3.5)), 3),
                "pmin": round(pmax - float(rng.uniform(3.0, 7.0)), 3),
                "pmax": pmax,
            }
        )
    data: dict[str, Any] = {
        "scenario": {"name": spec.name, "seed": spec.seed},
        "network": {"case": spec.case, "line_limits": {}},
        "agents": agents,
        **{k: dict(v) for k, v in spec.extra.items()},
    }
    if spec.nearest:
        data["market"] = {"pairs": {"nearest": spec.sellers_per_buyer}}
        return data
    sellers = [a["id"] for a in agents if a["id"].startswith("S")]
    buyers = [a["id"] for a in agents if a["id"].startswith("B")]
    pairs = {(s, b) for b in buyers for s in rng.choice(sellers, spec.sellers_per_buyer, False)}
    for s in sellers:  # every seller trades with someone
        if not any(p[0] == s for p in pairs):
            pairs.add((s, str(rng.choice(buyers))))
    ordered = sorted(pairs, key=lambda p: (int(p[0][1:]), int(p[1][1:])))
    data["market"] = {"pairs": [list(p) for p in ordered]}
    return data


def with_binding_limits(spec: Spec, data: dict) -> dict | None:
    try:
        scenario = parse_scenario(data, f"<{spec.name}>")
        setup = build_setup(scenario)
        costs = agent_costs(scenario)
        flows = solve_central(setup, costs).flows
    except (ScenarioError, InfeasibleMarketError) as exc:  # e.g. a seller its partners can't absorb
        print(f"  {spec.name}: rejected ({str(exc).splitlines()[0]})")
        return None
    busiest = np.argsort(-np.abs(flows))[: spec.limits]
    limits = {setup.line_names[i]: round(0.75 * abs(float(flows[i])), 1) for i in busiest}
    data["network"]["line_limits"] = limits
    scenario = parse_scenario(data, f"<{spec.name}>")
    setup = build_setup(scenario)
    try:
        central = solve_central(setup, costs)
    except InfeasibleMarketError:
        return None
    eta = central.line_prices.up + central.line_prices.down
    if not np.all(eta > 1e-3):
        return None
    result = negotiate(setup, costs)
    print(
        f"  {spec.name}: {len(scenario.pairs)} pairs, limits {limits}, "
        f"rounds {result.rounds}, converged {result.converged}"
    )
    return data if result.converged else None


def to_toml(spec: Spec, data: dict) -> str:
    lines = [
        f"# {spec.note} on MATPOWER {spec.case[4:]}-bus ({spec.case}).",
        "# Generated by scripts/make_scale_scenarios.py (seeded); edit the script, not this file.",
        "[scenario]",
        f'name = "{spec.name}"',
        f"seed = {spec.seed}",
        "",
        "[network]",
        f'case = "{spec.case}"',
        "",
        "[network.line_limits]",
        *(f'"{k}" = {v}' for k, v in data["network"]["line_limits"].items()),
        "",
    ]
    for section, body in spec.extra.items():
        lines += [f"[{section}]", *(f"{k} = {_value(v)}" for k, v in body.items()), ""]
    for a in data["agents"]:
        lines += ["[[agents]]", *(f"{k} = {_value(v)}" for k, v in a.items()), ""]
    pairs = data["market"]["pairs"]
    if isinstance(pairs, dict):
        lines += ["[market]", f"pairs = {{ nearest = {pairs['nearest']} }}", ""]
    else:
        lines += ["[market]", "pairs = ["]
        lines += [f'  ["{s}", "{b}"],' for s, b in pairs]
        lines += ["]", ""]
    return "\n".join(lines)


def _value(v: object) -> str:
    return f"{v!r}".replace("'", '"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "configs")
    parser.add_argument(
        "--only", nargs="+", choices=[s.name for s in SPECS], help="Generate only these."
    )
    args = parser.parse_args()
    for spec in SPECS:
        if args.only and spec.name not in args.only:
            continue
        for attempt in range(50):
            data = with_binding_limits(spec, draw(spec, attempt))
            if data is not None:
                path = args.out / f"{spec.name}.toml"
                path.write_text(to_toml(spec, data))
                print(f"wrote {path} (attempt {attempt})")
                break
        else:
            raise SystemExit(f"no acceptable draw for {spec.name}")


if __name__ == "__main__":
    main()
