"""Message faults on purpose: a chaos facility for tests, off unless ``PRIVGRID_FAULTS`` is set.

Why: the protocol claims that duplicated, delayed and reordered messages never change the
result (docs/reliability.md). The only honest way to show it is to make a real participant's
traffic misbehave on a real broker. :class:`FaultInjector` sits between a participant's
:class:`~privgrid.wire.session.MqttSession` and the broker and, per outgoing message, may

- **duplicate** it (the same bytes twice, like a QoS 1 redelivery),
- **delay** it by up to ``max_delay`` seconds (later messages overtake it), or
- **reorder** it: hold it back until the next message has gone out (or ``max_delay`` passes).

``PRIVGRID_FAULTS`` is a JSON object, e.g.
``{"duplicate": 0.1, "delay": 0.1, "reorder": 0.1, "max_delay": 0.3, "seed": 7}``:
probabilities in [0, 1], ``max_delay`` in seconds (0 < max_delay ≤ 60), ``seed`` an integer
(each participant draws from its own stream, seeded with ``seed`` and its client id). Anything
else is a :class:`FaultConfigError` naming the key; the role processes turn it into exit
status 2. Retained messages (key announcements and their clearing) pass unchanged.

Every delayed or held message is an asyncio task the injector tracks: :meth:`flush` sends
what is still pending (the session calls it before disconnecting), so nothing is dropped and
no task outlives the session. Note that with faults on, ``publish`` may return before the
message is on the wire, which weakens "checkpoint after everything before it is published";
faults are for chaos tests, not for production runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

ENV_FAULTS = "PRIVGRID_FAULTS"
_PROBABILITIES = ("duplicate", "delay", "reorder")
_MAX_DELAY_LIMIT = 60.0

#: Sends one message for real (the session's QoS 1 publish with retries).
Sender = Callable[[str, bytes], Awaitable[None]]


class FaultConfigError(ValueError):
    """``PRIVGRID_FAULTS`` is not a valid fault specification; the message says why."""


@dataclass(frozen=True)
class FaultSpec:
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    max_delay: float = 0.3
    seed: int = 0

    @classmethod
    def parse(cls, raw: str) -> FaultSpec:
        """Parse and check the JSON text of ``PRIVGRID_FAULTS``."""
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FaultConfigError(f"{ENV_FAULTS} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise FaultConfigError(f"{ENV_FAULTS} must be a JSON object, got {raw!r}")
        known = {*_PROBABILITIES, "max_delay", "seed"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaultConfigError(
                f"{ENV_FAULTS}: unknown key(s) {unknown}; known: {sorted(known)}"
            )
        for key in (*_PROBABILITIES, "max_delay"):
            value = data.get(key)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not number:
                raise FaultConfigError(f"{ENV_FAULTS}: {key} must be a number, got {value!r}")
        for key in _PROBABILITIES:
            if not 0.0 <= data.get(key, 0.0) <= 1.0:
                raise FaultConfigError(
                    f"{ENV_FAULTS}: {key} is a probability, must be in [0, 1] (got {data[key]!r})"
                )
        max_delay = data.get("max_delay", cls.max_delay)
        if not 0.0 < max_delay <= _MAX_DELAY_LIMIT:
            raise FaultConfigError(
                f"{ENV_FAULTS}: max_delay must be in (0, {_MAX_DELAY_LIMIT:g}] seconds "
                f"(got {max_delay!r})"
            )
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise FaultConfigError(f"{ENV_FAULTS}: seed must be an integer, got {seed!r}")
        return cls(**{k: data[k] for k in data if k != "max_delay"}, max_delay=float(max_delay))

    @classmethod
    def from_env(cls) -> FaultSpec | None:
        """The spec in the environment, or None when faults are off (unset or empty)."""
        raw = os.environ.get(ENV_FAULTS, "").strip()
        return cls.parse(raw) if raw else None


class FaultInjector:
    """Duplicates, delays and reorders one participant's outgoing messages (see module doc)."""

    def __init__(
        self,
        spec: FaultSpec,
        identifier: str,
        send: Sender,
        log: logging.LoggerAdapter[Any] | logging.Logger,
    ) -> None:
        self.spec = spec
        self.rng = random.Random(f"{spec.seed}/{identifier}")
        self.send = send
        self.log = log
        self.tasks: set[asyncio.Task[None]] = set()
        self._held: tuple[str, bytes] | None = None
        self._release: asyncio.Task[None] | None = None
        self.counts = {"duplicated": 0, "delayed": 0, "reordered": 0}

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("a fault-injected publish failed: %r", task.exception())

    async def _later(self, topic: str, payload: bytes, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.send(topic, payload)

    async def _release_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        held, self._held = self._held, None
        self._release = None
        if held is not None:
            await self.send(*held)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Send ``payload`` now, later, twice, or after the next message."""
        spec, rng = self.spec, self.rng
        if rng.random() < spec.duplicate:
            self.counts["duplicated"] += 1
            self._spawn(self._later(topic, payload, rng.uniform(0, spec.max_delay)), "dup")
        if self._held is None and rng.random() < spec.reorder:
            self.counts["reordered"] += 1
            self._held = (topic, payload)
            self._release = self._spawn(self._release_after(spec.max_delay), "held")
            return
        if rng.random() < spec.delay:
            self.counts["delayed"] += 1
            self._spawn(self._later(topic, payload, rng.uniform(0, spec.max_delay)), "delay")
        else:
            await self.send(topic, payload)
        await self._send_held()

    async def _send_held(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if self._release is not None:
            self._release.cancel()
            self._release = None
        await self.send(*held)

    async def flush(self, timeout: float) -> None:
        """Send everything still held or delayed (before the session disconnects)."""
        await self._send_held()
        pending = list(self.tasks)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if late:
            self.log.warning("%d fault-injected messages not sent before closing", len(late))
