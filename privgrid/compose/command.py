"""``privgrid compose``: the host command that writes (or checks) a compose or stack file.

Only the command-line face: argument parsing, ``--check``, messages and exit statuses. What
the files contain is :mod:`.document`'s (Compose) and :mod:`.stack`'s (Swarm); a stack's
secrets are written here, on the host, by the compose file's own setup step
(:func:`privgrid.compose.setup.setup_grid`), because ``docker stack deploy`` reads them from
the deploying machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from privgrid.compose.common import BROKER_UID, DEFAULT_UID, ComposeError
from privgrid.compose.document import DEFAULT_FILE_NAMES, generate
from privgrid.scenario import ScenarioError


@click.command(name="compose")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write; secrets/ and runs/ go beside it [default: compose.yaml, or "
    "stack.yaml with --swarm].",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if OUTPUT is out of date.")
@click.option(
    "--tls",
    is_flag=True,
    help="TLS only to the broker (port 8883), client certificates instead of passwords.",
)
@click.option(
    "--swarm",
    is_flag=True,
    help="A Docker Swarm stack (docker stack deploy) instead of a Compose file; also writes "
    "its secrets/ and runs/ beside it. See docs/deploy.md.",
)
def compose_command(
    scenario: Path, output: Path | None, check: bool, tls: bool, swarm: bool
) -> None:
    """Write a Docker Compose file that runs SCENARIO, one container per participant.

    Services: setup (keys, broker credentials, ACL; runs first), broker (Mosquitto), lm, mo
    and agent-<id> for every agent. Then: docker compose -f OUTPUT up --build
    --abort-on-container-exit --exit-code-from mo. The file holds no secret; it is the same
    every time for the same scenario. With --swarm: a stack for docker stack deploy over
    several nodes (encrypted overlay network, Swarm secrets, placement by node labels).
    Exit status: 0 written (or up to date), 1 out of date (--check), 2 invalid scenario.
    """
    output = output or Path("stack.yaml" if swarm else "compose.yaml")
    try:
        if swarm:
            from privgrid.compose.stack import generate_stack

            text = generate_stack(scenario, output, tls)
        else:
            text = generate(scenario, output, tls)
    except (ScenarioError, ComposeError) as exc:
        click.echo(f"privgrid: error: {exc}", err=True)
        sys.exit(2)
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            flags = (" --swarm" if swarm else "") + (" --tls" if tls else "")
            click.echo(
                f"{output} is out of date: run privgrid compose {scenario}{flags} -o {output}"
            )
            sys.exit(1)
        click.echo(f"{output} is up to date")
        return
    if swarm:
        _write_stack_secrets(scenario, output, tls)
    output.write_text(text, encoding="utf-8")
    if swarm:
        from privgrid.compose.stack import stack_name
        from privgrid.scenario import load_scenario

        name = stack_name(load_scenario(scenario))
        hint = (
            ""
            if os.geteuid() == 0
            else " (export PRIVGRID_UID=$(id -u) PRIVGRID_GID=$(id -g) first)"
        )
        click.echo(
            f"wrote {output}, secrets/ and runs/ beside it; label the nodes, then run: docker "
            f"stack deploy --resolve-image never -c {output} {name}{hint}; privgrid swarm wait "
            f"{name}"
        )
        return
    where = "" if output.name in DEFAULT_FILE_NAMES else f" -f {output}"
    click.echo(
        f"wrote {output}; run: docker compose{where} up --build "
        "--abort-on-container-exit --exit-code-from mo"
    )


def _write_stack_secrets(scenario: Path, output: Path, tls: bool) -> None:
    """The stack's secrets and run folder beside it, as the compose ``setup`` service makes
    them (as root: owned by the participants' uid; else by whoever runs this)."""
    from privgrid.compose.setup import Owner, setup_grid
    from privgrid.compose.stack import BROKER_SECRETS
    from privgrid.scenario import load_scenario

    base = output.resolve().parent
    name = load_scenario(scenario).name
    try:
        setup_grid(
            scenario,
            name,
            name,
            secrets_root=base / "secrets",
            runs_root=base / "runs",
            broker_data=None,
            owner=Owner.from_env("PRIVGRID", DEFAULT_UID, os.environ),
            broker_owner=Owner.from_env("PRIVGRID_BROKER", BROKER_UID, os.environ),
            tls=tls,
            broker_config_dir=BROKER_SECRETS,
        )
    except (ScenarioError, ComposeError, OSError) as exc:
        click.echo(f"privgrid: error: {exc}", err=True)
        sys.exit(2)
