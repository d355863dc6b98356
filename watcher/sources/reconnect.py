"""The reconnect loop every engine-backed source shares (as kopf has one watch loop).

A source gives it one session: connect, subscribe (``subscribed``), resync (then ``synced()``),
stream, until the engine fails with an ``EngineError``. The loop starts the next session after a backoff with
jitter, for ever; every session resyncs, so nothing missed while away is lost. A lasting failure
is one warning per kind, the same failure again at debug, until a session syncs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, NoReturn

from watcher.config import DockerSettings
from watcher.selfmetrics import EngineErrorKind
from watcher.sources.engine import Engine, EngineError


@dataclass
class Backoff:
    """Exponential delays with equal jitter: half fixed, half random."""

    initial: float
    maximum: float
    rng: Callable[[], float] = random.random
    attempt: int = 0

    def next(self) -> float:
        cap = min(self.maximum, self.initial * 2.0**self.attempt)
        self.attempt += 1
        return cap / 2 + self.rng() * cap / 2

    def reset(self) -> None:
        self.attempt = 0


def _ignore(_: object) -> None:
    pass


@dataclass
class Reconnect:
    """Sessions one after the other, for ever; ``connected`` while one is synced, else ``problem`` says why."""

    docker: DockerSettings
    log: logging.Logger  # the source's own logger: its lines keep their name
    prefix: str = ""  # before each line, naming the source when the engine has several
    failed: Callable[[EngineError], None] = _ignore  # each failure, as the source counts them
    up: Callable[[bool], None] = _ignore  # connected or not, as the source shows it
    quiet: frozenset[str] = frozenset()  # kinds another source reports already: at debug
    speaks: bool = True  # False: every line at debug, another source speaks for the engine
    connected: bool = False
    problem: str = "not connected to the Docker Engine yet"
    backoff: Backoff = field(init=False)
    _logged: set[str] = field(default_factory=set)  # kinds of failure logged since the last sync
    _ever: bool = False  # a session has synced once: a failure is a loss, not a failure to reach

    def __post_init__(self) -> None:
        self.backoff = Backoff(self.docker.backoff_initial_seconds, self.docker.backoff_max_seconds)

    def synced(self) -> None:
        """The session subscribed and resynced: the source is live."""
        self.backoff.reset()
        if not self.connected:
            again = "again " if self._logged else ""
            level = logging.INFO if self.speaks else logging.DEBUG
            self.log.log(level, "%sconnected %sto the Docker Engine and synced", self.prefix, again)
        self._logged.clear()
        self._ever = True
        self._set(True)

    def answered(self) -> None:
        """The engine answered, with nothing to follow yet: the next failure starts the backoff over."""
        self.backoff.reset()

    async def forever(self, session: Callable[[], Awaitable[NoReturn]]) -> NoReturn:
        """``session()`` again and again: whatever the engine does ends one at most (an
        ``EngineError``, the first of a group), counted and logged, and the next starts after
        the backoff. Anything else is a bug, and ends the loop."""
        while True:
            try:
                await session()
            except* EngineError as group:
                error = _first(group)
            finally:
                self._set(False)
            # Python 3.11's TaskGroup reports a child's failure and drops a cancellation of ours that
            # came at the same moment (the engine closed as we were stopped): stop as asked, not retry.
            if (task := asyncio.current_task()) is not None and task.cancelling():
                raise asyncio.CancelledError
            self.failed(error)
            self.problem = error.reason
            delay = self.backoff.next()
            what = "lost the Docker Engine" if self._ever else "cannot reach the Docker Engine"
            quiet = not self.speaks or error.kind in self._logged or error.kind in self.quiet
            level = logging.DEBUG if quiet else logging.WARNING
            self._logged.add(error.kind)
            self.log.log(level, "%s%s (%s); reconnecting in %.1f s", self.prefix, what, error, delay)
            await asyncio.sleep(delay)

    def _set(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self.problem = ""
        self.up(connected)


@asynccontextmanager
async def subscribed(
    engine: Engine, *, since: float, filters: Mapping[str, Any]
) -> AsyncIterator[asyncio.Queue[Mapping[str, Any] | EngineError]]:
    """A session's subscription, entered once the daemon answered it: the events from ``since``
    in a queue, then why the stream ended. Read in a task of its own, waiting for nothing else:
    the daemon drops the events of a client that stops reading."""
    received: asyncio.Queue[Mapping[str, Any] | EngineError] = asyncio.Queue()
    opened = asyncio.Event()

    async def receive() -> None:
        try:
            async with aclosing(engine.events(since=since, filters=filters, opened=opened.set)) as events:
                async for event in events:
                    received.put_nowait(event)
            received.put_nowait(EngineError(EngineErrorKind.CONNECTION, "the daemon ended the event stream"))
        except EngineError as error:
            received.put_nowait(error)

    stream = asyncio.create_task(receive())
    try:
        waiting = asyncio.create_task(opened.wait())
        try:
            await asyncio.wait([waiting, stream], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if not opened.is_set():  # the request has its own bound
            error = received.get_nowait() if not received.empty() else None
            if isinstance(error, EngineError):
                raise error
            raise EngineError(EngineErrorKind.CONNECTION, "the event stream ended early")
        yield received
    finally:
        stream.cancel()
        with suppress(asyncio.CancelledError):
            await stream


def _first(group: BaseExceptionGroup[EngineError]) -> EngineError:
    """The first failure of a session (the others, if any, followed from it)."""
    while True:
        first = group.exceptions[0]
        if isinstance(first, EngineError):
            return first
        group = first
