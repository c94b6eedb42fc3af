"""Waiting on a condition instead of sleeping a fixed time.

Where a test can await the event itself (a SUBACK, a process's exit, a message it knows will
come last), it does. Where nothing signals the condition — a file a process appends to, a
counter of another process — these poll it until it holds or a deadline passes: a generous
deadline costs nothing when things go well and gives a loaded machine its time, while a fixed
sleep is too short on a loaded machine and too long everywhere else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
#: Seconds between two looks at the condition.
INTERVAL = 0.05


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``condition`` until it returns a true value, and return that value.

    Raises:
        AssertionError: naming ``what``, if it is still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(INTERVAL)


async def wait_until_async(condition: Callable[[], T], timeout: float, what: str) -> T:
    """:func:`wait_until` inside an event loop (other tasks run while it waits)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(INTERVAL)
