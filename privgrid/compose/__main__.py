"""``python -m privgrid.compose setup|exec``: what the compose services run inside the image.

The generated compose files (and the checked-in compose.yaml / compose.collusion.yaml) name
these two commands as their entry points; they are not meant for the host.
"""

from __future__ import annotations

import click

from privgrid.compose.setup import setup_command
from privgrid.compose.supervisor import exec_command


@click.group()
def container_main() -> None:
    """What the compose services run inside the image (not meant for the host)."""


container_main.add_command(setup_command)
container_main.add_command(exec_command)

if __name__ == "__main__":
    container_main()
