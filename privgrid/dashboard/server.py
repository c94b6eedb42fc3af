"""The dashboard's web server: one page, its static files, and a server-sent event stream.

Library: **aiohttp**. The dashboard is an asyncio program already — its broker side is the
project's aiomqtt session (:class:`privgrid.wire.session.MqttSession`) — and aiohttp is an
asyncio HTTP server in one well-kept package (no separate ASGI server to pick, configure and
keep in step with a framework), whose streaming responses are all that server-sent events
need. Server-sent events rather than websockets: the page only listens; SSE is plain HTTP,
which the browser reconnects by itself, and needs no protocol of ours for the other way.

Routes: ``/`` the page, ``/static/…`` its scripts, styles and the bundled chart library (no
CDN: everything the page loads comes from here, and the Content-Security-Policy header says
so to the browser), ``/events`` the stream, ``/state.json`` the whole state at once (for
scripts, and ``curl``).

Each stream first sends the whole state, then what changed, at most :data:`PUSH_INTERVAL`
apart however fast the run goes: the residual trace row by row (``trace``), the rest whole
(``state``; a few kB), the drawing of the grid once (``network``). The run folder is polled
every :data:`POLL_INTERVAL`. On SIGTERM (the run is over) it reads the folder one last time,
sends that final state to every page, then ``bye``, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from privgrid.dashboard.files import RunFolder
from privgrid.dashboard.network import day_network, run_network
from privgrid.dashboard.state import RunState
from privgrid.dashboard.watch import DashboardError, Watcher

#: Seconds between two reads of the run folder.
POLL_INTERVAL = 0.5
#: Seconds between two pushes to one page, at the least.
PUSH_INTERVAL = 0.25
#: Seconds of silence after which a stream gets a comment line (keeps proxies from closing it).
KEEPALIVE = 15.0
#: Seconds a stopping dashboard waits for its pages to have the final state.
FINAL_PUSH_TIMEOUT = 3.0
STATIC = Path(str(resources.files("privgrid.dashboard") / "static"))
#: Everything the page loads comes from the dashboard itself.
CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Listen:
    """Where the dashboard listens: ``[HOST:]PORT``."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def in_use(listen: Listen, flag: str) -> DashboardError:
    return DashboardError(
        f"port {listen.port} on {listen.host} is in use; pick another with {flag} HOST:PORT"
    )


class Dashboard:
    """The state, its two sources (run folder, broker) and the web server around them."""

    def __init__(
        self,
        folder: Path,
        run: str,
        watcher_factory: Callable[[RunState, Callable[[], None]], Watcher] | None,
        log: logging.Logger | logging.LoggerAdapter,
        parent: int | None = None,
    ) -> None:
        """``parent``: the pid of the process that started us (``privgrid run``): when it is
        gone, so are we, even if it could not stop us."""
        self.folder = folder
        self.parent = parent
        self.state = RunState(run)
        self.files = RunFolder(folder, self.state, time.time)
        self.network: dict[str, Any] | None = None
        self.log = log
        self.change = asyncio.Event()
        self.stopped = asyncio.Event()
        self.pages = 0
        self.caught_up: set[int] = set()  # pages (by id) that have the final state
        self.watcher = watcher_factory(self.state, self.notify) if watcher_factory else None
        if self.watcher is None:
            self.state.broker = "none: this dashboard reads the run folder only"
            self.state.watching = False

    # -- sources ---------------------------------------------------------------------------
    def notify(self) -> None:
        """Wake every stream (they push what changed)."""
        self.change.set()
        self.change = asyncio.Event()

    async def poll(self) -> None:
        """Read the run folder now (and the grid's drawing while it is not there yet)."""
        before = self.state.version
        try:
            self.files.poll()
        except OSError as exc:  # the folder is being written by others: next time
            self.log.warning("could not read the run folder: %s", exc)
        if self.network is None:
            await self._load_network()
        if self.state.version != before:
            self.notify()

    async def _load_network(self) -> None:
        try:
            if self.files.is_day:
                self.network = await asyncio.to_thread(day_network, self.folder)
            elif self.files.public is not None:
                self.network = await asyncio.to_thread(run_network, self.files.public, self.folder)
        except Exception as exc:  # the page still works without a drawing
            self.log.warning("cannot draw the grid: %s", exc)
            self.network = {"error": str(exc), "buses": [], "lines": [], "agents": []}
        if self.network is not None:
            self.notify()

    async def _poll_forever(self, stop: asyncio.Event) -> None:
        while True:
            await self.poll()
            if self.parent is not None and os.getppid() != self.parent:
                self.log.warning("the process that started the dashboard is gone: stopping")
                stop.set()
            await asyncio.sleep(POLL_INTERVAL)

    # -- the web side ----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.on_response_prepare.append(_headers)
        app.router.add_get("/", self._index)
        app.router.add_get("/events", self._events)
        app.router.add_get("/state.json", self._state_json)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        return app

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _state_json(self, request: web.Request) -> web.Response:
        body = {"state": self.state.public(), "trace": self.state.trace, "network": self.network}
        return web.json_response(body)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        page = id(response)
        self.pages += 1
        sent: dict[str, Any] = {"version": -1, "rows": 0, "epoch": -1, "network": False}
        try:
            while True:
                waiter = self.change
                await self._push(response, sent)
                if self.state.stopping and sent["version"] == self.state.version:
                    self.caught_up.add(page)
                    await _send(response, "bye", {"reason": "the dashboard stopped"})
                    break
                try:
                    await asyncio.wait_for(waiter.wait(), KEEPALIVE)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                await asyncio.sleep(PUSH_INTERVAL)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.pages -= 1
        return response

    async def _push(self, response: web.StreamResponse, sent: dict[str, Any]) -> None:
        state = self.state
        if self.network is not None and not sent["network"]:
            await _send(response, "network", self.network)
            sent["network"] = True
        if sent["epoch"] != state.trace_epoch:
            sent["epoch"], sent["rows"] = state.trace_epoch, 0
            await _send(response, "trace", {"epoch": state.trace_epoch, "reset": True, "rows": []})
        if len(state.trace) > sent["rows"]:
            rows = state.trace[sent["rows"] :]
            await _send(response, "trace", {"epoch": state.trace_epoch, "rows": rows})
            sent["rows"] += len(rows)
        if sent["version"] != state.version:
            sent["version"] = state.version
            await _send(response, "state", state.public())

    # -- running ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop serving (as SIGTERM does): the final state goes to the pages first."""
        self.stopped.set()

    async def serve(
        self, listen: Listen, flag: str, ready: Callable[[str], None], signals: bool = True
    ) -> None:
        """Serve until SIGTERM/SIGINT (``signals``) or :meth:`stop`; ``ready`` gets the page's
        URL once it listens.

        Raises:
            DashboardError: the port is in use, or the broker refuses the account.
        """
        await self.poll()  # first: the scenario says who the participants are
        if self.watcher is not None:
            await self.watcher.check_account(timeout=60)
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, listen.host, listen.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise in_use(listen, flag) from None
            raise DashboardError(f"cannot listen on {listen.host}:{listen.port}: {exc}") from None
        stop = self.stopped
        if signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(self._poll_forever(stop))]
        if self.watcher is not None:
            tasks.append(asyncio.create_task(self.watcher.watch()))
        ready(listen.url)
        self.log.info("serving %s (run folder %s)", listen.url, self.folder)
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._final_push()
            await runner.cleanup()

    async def _final_push(self) -> None:
        """Read the folder a last time (the results), push it, wait for the pages to have it."""
        await self.poll()
        self.state.set_stopping()
        self.notify()
        deadline = asyncio.get_running_loop().time() + FINAL_PUSH_TIMEOUT
        while self.pages > len(self.caught_up) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=_jsonable)
    await response.write(f"event: {event}\ndata: {text}\n\n".encode())


def _jsonable(value: Any) -> Any:
    raise TypeError(f"not JSON: {type(value).__name__}")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
