"""``privgrid dashboard RUN_DIR``: watch a run (or a day) in a browser, live.

For a run started elsewhere (another terminal, a compose project): it reads the run folder
and, with ``--broker``, the broker through an account of its own that may only read. Without
``--broker`` it follows the run folder only (a day solved in process, a finished run).
``privgrid run --dashboard`` starts this same program beside the run (:mod:`.launch`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from privgrid.dashboard.launch import DEFAULT_HOST, DEFAULT_PORT, parse_listen
from privgrid.dashboard.watch import DashboardError
from privgrid.wire.session import ENV_URL


def _fail(message: str) -> None:
    click.echo(f"privgrid: error: {message}", err=True)
    sys.exit(2)


@click.command("dashboard")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--broker",
    "broker",
    envvar=ENV_URL,
    help="The dashboard's own read-only broker account, mqtt://USER:PASSWORD@HOST:PORT "
    f"[env {ENV_URL}]; without it, only the run folder is followed.",
)
@click.option(
    "--listen",
    default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
    show_default=True,
    help="[HOST:]PORT to serve the page on (host default: loopback only).",
)
@click.option(
    "--run",
    "run_id",
    envvar="PRIVGRID_RUN",
    help="Run id on the broker [default: the run folder's name].",
)
@click.option(
    "--roster",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run's public roster (roster.json): check every message's signature with it.",
)
@click.option("--flag", default="--listen", hidden=True)  # which option errors name
@click.option("--parent", type=int, hidden=True)  # exit when this process is gone
def dashboard_command(
    run_dir: Path,
    broker: str | None,
    listen: str,
    run_id: str | None,
    roster: Path | None,
    flag: str,
    parent: int | None,
) -> None:
    """Serve a live web page of the run in RUN_DIR (residuals, grid, participants, a day's
    intervals) until Ctrl-C.

    It reads only what a monitor may read: the broker's messages as a read-only account sees
    them (envelopes: who sent what kind in which round, never a sealed body) and the run
    folder's trace.csv, results.json, logs and scenario — never secrets/, state/ or broker/.
    Exit status: 0 stopped, 2 bad input (the port in use, no dashboard account, a broker that
    refuses it).
    """
    from privgrid.crypto.errors import IdentityError
    from privgrid.crypto.identity import Roster
    from privgrid.dashboard.server import Dashboard
    from privgrid.dashboard.state import RunState
    from privgrid.dashboard.watch import Watcher
    from privgrid.logs import setup
    from privgrid.wire.session import BrokerUrl, BrokerUrlError

    try:
        where = parse_listen(listen, flag)
    except DashboardError as exc:
        _fail(str(exc))
    if not run_dir.is_dir():
        _fail(f"{run_dir}: no such run folder")
    run = run_id or run_dir.resolve().name
    keys = None
    if roster is not None:
        try:
            keys = {pid: Roster.load(roster).public_key(pid) for pid in Roster.load(roster)}
        except (OSError, IdentityError) as exc:
            _fail(f"--roster {roster}: {exc}")
    log = setup("dashboard")
    factory = None
    if broker:
        try:
            url = BrokerUrl.parse(broker)
        except BrokerUrlError as exc:
            _fail(f"--broker: {exc}")

        def factory(state: RunState, changed: Callable[[], None]) -> Watcher:
            return Watcher(url, run, state, keys, time.time, changed, log)

    async def main() -> None:
        dashboard = Dashboard(run_dir, run, factory, log, parent=parent)

        def ready(page: str) -> None:
            print(f"dashboard: {page}", flush=True)

        await dashboard.serve(where, flag, ready)

    try:
        asyncio.run(main())
    except DashboardError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass
    sys.exit(0)
