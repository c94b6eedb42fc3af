"""How many rounds each scenario takes: the one table of every test that pins a round count.

The negotiation is deterministic — one scenario gives the same iterates bit for bit in one
process (``negotiate``, ``privgrid solve``) and over the wire (every role its own process, or
the in-process bus) — so tests pin exact counts, not bounds. A change that moves the counts (a
new default step size, another stopping rule) fails those tests together and is updated here,
once, after checking that the new counts are meant: ``python -m tests.rounds`` prints them.
"""

from __future__ import annotations

#: Shipped single-market scenarios (configs/*.toml without [day]), by file stem.
ROUNDS = {
    "collusion": 131,  # the published steps, pinned in the file (docs/privacy.md)
    "ieee118-100": 182,
    "ieee118-100-nearest": 229,
    "ieee118-500": 388,
    "ieee30-40": 103,
    "paper": 72,
    "paper-unconstrained": 46,
}
#: configs/paper.toml with ρ = 1.5 and ε_P = ε_λ = 1e-3 (the short run of the message-fault
#: tests, in plain mode with either LM leg).
PAPER_SHORT = 46


def main() -> None:
    """Print each shipped scenario's round count as negotiated now, next to the table's."""
    import tomllib
    from pathlib import Path

    from privgrid.feeder.schema import is_day
    from privgrid.market.negotiation import negotiate
    from privgrid.market.setup import agent_costs, build_setup
    from privgrid.scenario import load_scenario

    for path in sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.toml")):
        if not is_day(tomllib.loads(path.read_text())):
            scenario = load_scenario(path)
            rounds = negotiate(build_setup(scenario), agent_costs(scenario)).rounds
            print(f"{path.stem:24} {rounds:6d}   (table: {ROUNDS.get(path.stem)})", flush=True)


if __name__ == "__main__":
    main()
