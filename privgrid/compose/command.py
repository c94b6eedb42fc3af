"""``privgrid compose``: the host command that writes (or checks) a compose file.

Only the command-line face: argument parsing, ``--check``, messages and exit statuses. What
the file contains is :mod:`.document`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from privgrid.compose.common import ComposeError
from privgrid.compose.document import DEFAULT_FILE_NAMES, generate
from privgrid.scenario import ScenarioError


@click.command(name="compose")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("compose.yaml"),
    show_default=True,
    help="Compose file to write; secrets/ and runs/ go beside it.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if OUTPUT is out of date.")
def compose_command(scenario: Path, output: Path, check: bool) -> None:
    """Write a Docker Compose file that runs SCENARIO, one container per participant.

    Services: setup (keys, broker credentials, ACL; runs first), broker (Mosquitto), lm, mo
    and agent-<id> for every agent. Then: docker compose -f OUTPUT up --build
    --abort-on-container-exit --exit-code-from mo. The file holds no secret; it is the same
    every time for the same scenario. Exit status: 0 written (or up to date), 1 out of date
    (--check), 2 invalid scenario.
    """
    try:
        text = generate(scenario, output)
    except (ScenarioError, ComposeError) as exc:
        click.echo(f"privgrid: error: {exc}", err=True)
        sys.exit(2)
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            click.echo(f"{output} is out of date: run privgrid compose {scenario} -o {output}")
            sys.exit(1)
        click.echo(f"{output} is up to date")
        return
    output.write_text(text, encoding="utf-8")
    where = "" if output.name in DEFAULT_FILE_NAMES else f" -f {output}"
    click.echo(
        f"wrote {output}; run: docker compose{where} up --build "
        "--abort-on-container-exit --exit-code-from mo"
    )
