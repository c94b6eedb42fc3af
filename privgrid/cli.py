"""The ``privgrid`` command. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from privgrid.market.central import InfeasibleMarketError
from privgrid.scenario import ScenarioError


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"privgrid: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="privgrid")
def main() -> None:
    """Privacy-preserving peer-to-peer energy trading: negotiation, grid and ledger."""


@main.command()
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON results to this file.",
)  # fmt: skip
def solve(scenario: Path, as_json: bool, output: Path | None) -> None:
    """Negotiate SCENARIO in one process and compare with the centralised optimum.

    Runs every role's update in sequence (no network, no crypto), solves the centralised
    social-welfare QP, checks the Proof-of-Solution (KKT) conditions and prints a summary.
    Exit status: 0 when the negotiation converged and the KKT checks passed, 1 otherwise,
    2 for invalid input.
    """
    from privgrid.console import print_summary
    from privgrid.solve import prepare
    from privgrid.solve import solve as run_solve

    try:
        _, setup = prepare(scenario)
    except (ScenarioError, InfeasibleMarketError) as exc:
        _fail(str(exc))
    results = run_solve(setup)
    text = json.dumps(results, indent=2)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
    if as_json:
        click.echo(text)
    else:
        print_summary(results)
    sys.exit(0 if results["converged"] and results["kkt"]["passed"] else 1)


if __name__ == "__main__":
    main()
