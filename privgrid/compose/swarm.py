"""``privgrid swarm wait STACK``: the result of a grid deployed as a Swarm stack.

A stack has no ``--exit-code-from``: its services run until removed, and a task that cannot
start (an image missing on its node, no node with the right label) only says so in
``docker stack ps``. This command watches the stack's tasks through the ``docker`` CLI and

- exits with the MO's status once the MO's task has ended (0 converged and committed, 1 not
  converged, 2 bad input, 3 a participant failed), printing it and where the results are;
- exits 2 at once, naming the service, the node and the image, when a node lacks the image
  (Docker's "No such image"), or naming the label when a service finds no node to run on;
- exits 3 if the MO has not ended within ``--timeout``.

Host-side and read-only: it runs on a manager node and only reads what Docker reports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import click

#: What Docker writes in a task's error when its node lacks the image.
_NO_IMAGE = re.compile(
    r"No such image|pull access denied|manifest unknown|repository does not exist|"
    r"not found: manifest|failed to resolve reference",
    re.IGNORECASE,
)
_NO_NODE = "no suitable node"
_EXIT = re.compile(r"non-zero exit \((\d+)\)")
#: A service that finds no node this long is not waiting for a node that is starting.
PLACEMENT_GRACE = 30.0


class SwarmError(RuntimeError):
    """The stack cannot give a result; the message says why and what to do."""


@dataclass(frozen=True)
class Task:
    id: str
    name: str  # <stack>_<service>.<slot>
    image: str
    node: str
    desired: str
    current: str  # "Running 3 seconds ago", "Complete …", "Failed …", "Rejected …", "Pending …"
    error: str

    @property
    def service(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def ended(self) -> bool:
        return self.current.split(" ", 1)[0] in ("Complete", "Failed", "Shutdown", "Rejected")


def docker_cli(args: Sequence[str]) -> str:
    """Run ``docker ARGS``; its output, or :class:`SwarmError` with Docker's own message."""
    docker = shutil.which("docker")
    if docker is None:
        raise SwarmError("the docker command is not installed")
    proc = subprocess.run([docker, *args], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise SwarmError(f"docker {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def stack_tasks(stack: str) -> list[Task]:
    out = docker_cli(["stack", "ps", stack, "--no-trunc", "--format", "{{json .}}"])
    tasks = []
    for line in out.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        tasks.append(
            Task(
                row.get("ID", ""),
                row.get("Name", "").lstrip("\\_ ").strip(),
                row.get("Image", ""),
                row.get("Node", ""),
                row.get("DesiredState", ""),
                row.get("CurrentState", ""),
                row.get("Error", ""),
            )
        )
    return tasks


def missing_image(tasks: Sequence[Task]) -> str | None:
    """A clear sentence if a task could not start because its node lacks its image."""
    for task in tasks:
        if _NO_IMAGE.search(task.error):
            node = f"node {task.node}" if task.node else "its node"
            return (
                f"service {task.service}: {node} has no image {task.image} ({task.error.strip()}); "
                f"build or load it there (docker build -t {task.image} . or docker load) — "
                "every node needs it"
            )
    return None


def _constraints(service: str) -> str:
    """The service's placement constraints, as Swarm has them ("a node with …")."""
    try:
        raw = docker_cli(
            ["service", "inspect", "--format", "{{json .Spec.TaskTemplate.Placement}}", service]
        )
        found = json.loads(raw).get("Constraints") or []
    except (SwarmError, ValueError, AttributeError):
        found = []
    return "a node with " + " and ".join(found) if found else "a node it may run on"


def exit_status(task: Task) -> int:
    """The exit status of an ended task's container."""
    try:
        code = docker_cli(["inspect", "--format", "{{.Status.ContainerStatus.ExitCode}}", task.id])
        return int(code.strip())
    except (SwarmError, ValueError):
        match = _EXIT.search(task.error)
        return int(match.group(1)) if match else (0 if task.current.startswith("Complete") else 3)


def wait_for_result(
    stack: str,
    *,
    timeout: float,
    interval: float = 2.0,
    say: Callable[[str], None] = print,
) -> int:
    """The MO's exit status (see the module's docstring); :class:`SwarmError` if none comes."""
    mo = f"{stack}_mo"
    deadline = time.monotonic() + timeout
    unplaced: dict[str, float] = {}
    while True:
        tasks = stack_tasks(stack)
        if not tasks:
            raise SwarmError(f"no stack named {stack} (docker stack ls lists the stacks)")
        problem = missing_image(tasks)
        if problem is not None:
            raise SwarmError(problem)
        now = time.monotonic()
        for task in tasks:
            if _NO_NODE in task.error and not task.ended:
                since = unplaced.setdefault(task.service, now)
                if now - since > PLACEMENT_GRACE:
                    raise SwarmError(
                        f"service {task.service} finds no node to run on ({task.error.strip()}); "
                        f"it needs {_constraints(task.service)}: docker node update "
                        "--label-add LABEL=true NODE (docs/deploy.md)"
                    )
        ended = [t for t in tasks if t.service == mo and t.ended]
        if ended:
            code = exit_status(ended[0])
            say(f"{mo} exited with status {code}")
            return code
        if now > deadline:
            raise SwarmError(f"{mo} has not finished within {timeout:g} s")
        time.sleep(interval)


@click.group("swarm")
def swarm_group() -> None:
    """A grid deployed as a Docker Swarm stack (privgrid compose --swarm)."""


@swarm_group.command("wait")
@click.argument("stack")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=3600,
    show_default=True,
    help="Seconds to wait for the MO.",
)
def wait_command(stack: str, timeout: float) -> None:
    """Wait for STACK's MO and exit with its status (0 converged and committed).

    Exits 2 naming the node and the image when a node lacks the image, or the label when a
    service finds no node; 3 if the MO has not finished within --timeout.
    """
    try:
        code = wait_for_result(stack, timeout=timeout, say=lambda s: click.echo(s, err=True))
    except SwarmError as exc:
        click.echo(f"privgrid: error: {exc}", err=True)
        sys.exit(3 if "has not finished" in str(exc) else 2)
    sys.exit(code)
