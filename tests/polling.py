"""Waiting in tests: poll a check until its value will do, or fail saying what was awaited, how
long, and what was seen last.

A check fails the wait at once by raising (an ``AssertionError`` saying that the process under
test exited, say); only the exceptions in ``retry_on`` count as "not yet" (a server not
listening yet: ``OSError``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class _Attempts:
    """The deadline, and the last outcome for the failure message."""

    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last = "nothing yet"

    def seen(self, value: object) -> None:
        self.last = f"last seen: {value!r:.2000}"

    def failed(self, error: Exception) -> None:
        self.last = f"last error: {error!r:.2000}"

    def expired(self) -> AssertionError:
        return AssertionError(f"timed out after {self.timeout:g} s waiting for {self.what}; {self.last}")

    def pause(self, interval: float) -> float:
        """Seconds until the next try; raises when the time is up."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self.expired()
        return min(interval, remaining)


def poll(
    what: str,
    check: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.2,
    until: Callable[[T], object] = bool,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """``check()`` every ``interval`` seconds until ``until(value)`` is true; that value."""
    attempts = _Attempts(what, timeout)
    while True:
        try:
            value = check()
        except retry_on as error:
            attempts.failed(error)
        else:
            if until(value):
                return value
            attempts.seen(value)
        time.sleep(attempts.pause(interval))


async def poll_async(
    what: str,
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    interval: float = 0.2,
    until: Callable[[T], object] = bool,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """``poll`` for an async ``check``; a check still running at the deadline is cancelled."""
    attempts = _Attempts(what, timeout)
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            while True:
                try:
                    value = await check()
                except retry_on as error:
                    attempts.failed(error)
                else:
                    if until(value):
                        return value
                    attempts.seen(value)
                await asyncio.sleep(attempts.pause(interval))
    except TimeoutError:
        if not deadline.expired():
            raise  # the check's own
        raise attempts.expired() from None
