"""The reconnect loop every engine-backed source shares: a failure logged once per kind until a
session syncs, 'lost' only after a first sync, the backoff started over by a sync, kinds another
source reports kept at debug, and ``connected``/``problem`` for ``/ready``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import NoReturn

import pytest

from tests.polling import poll_async
from watcher.config import DockerSettings
from watcher.selfmetrics import EngineErrorKind
from watcher.sources.engine import EngineError
from watcher.sources.reconnect import Reconnect

log = logging.getLogger("tests.reconnect")
FAST = DockerSettings(backoff_initial_seconds=0.001, backoff_max_seconds=0.002)


def sessions(
    reconnect: Callable[[], Reconnect], plan: list[tuple[bool, str]], started: list[int]
) -> Callable[[], Awaitable[NoReturn]]:
    """Sessions that each sync or not, then fail with an EngineError of the kind planned; the
    one after the plan waits for ever."""
    steps: Iterator[tuple[bool, str]] = iter(plan)

    async def session() -> NoReturn:
        started.append(len(started))
        step = next(steps, None)
        if step is None:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")
        syncs, kind = step
        if syncs:
            reconnect().synced()
        raise EngineError(EngineErrorKind[kind.upper()], f"{kind} {len(started)}")

    return session


async def run(reconnect: Reconnect, plan: list[tuple[bool, str]]) -> None:
    started: list[int] = []
    task = asyncio.create_task(reconnect.forever(sessions(lambda: reconnect, plan, started)))

    async def count() -> int:
        return len(started)

    try:
        await poll_async("every planned session", count, until=lambda n: n > len(plan), timeout=5, interval=0.001)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_failure_is_logged_once_per_kind_until_a_session_syncs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=log.name)
    failed: list[str] = []
    up: list[bool] = []
    reconnect = Reconnect(FAST, log, failed=lambda e: failed.append(e.kind), up=up.append)
    plan = [
        (False, "connection"),
        (False, "connection"),
        (False, "timeout"),
        (True, "connection"),
        (False, "connection"),
    ]
    await run(reconnect, plan)
    lines = [(r.levelno, r.getMessage().split(";")[0]) for r in caplog.records]
    assert lines == [
        (logging.WARNING, "cannot reach the Docker Engine (connection: connection 1)"),
        (logging.DEBUG, "cannot reach the Docker Engine (connection: connection 2)"),
        (logging.WARNING, "cannot reach the Docker Engine (timeout: timeout 3)"),
        (logging.INFO, "connected again to the Docker Engine and synced"),
        (logging.WARNING, "lost the Docker Engine (connection: connection 4)"),
        (logging.DEBUG, "lost the Docker Engine (connection: connection 5)"),
    ]
    assert failed == ["connection", "connection", "timeout", "connection", "connection"]
    assert up == [False, False, False, True, False, False, False]  # the last: the cancellation
    assert (reconnect.connected, reconnect.problem) == (False, "connection 5")


async def test_a_sync_starts_the_backoff_over_and_clears_the_problem() -> None:
    reconnect = Reconnect(DockerSettings(backoff_initial_seconds=0.001, backoff_max_seconds=60), log)
    assert (reconnect.connected, reconnect.problem) == (False, "not connected to the Docker Engine yet")
    await run(reconnect, [(False, "connection")] * 3)
    assert reconnect.backoff.attempt == 3
    reconnect.synced()
    assert (reconnect.connected, reconnect.problem, reconnect.backoff.attempt) == (True, "", 0)


async def test_kinds_another_source_reports_stay_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """The Swarm watch leaves a missing socket to the Docker watch; its other failures are its own lines."""
    caplog.set_level(logging.DEBUG, logger=log.name)
    reconnect = Reconnect(FAST, log, prefix="Swarm services: ", quiet=frozenset({"no_socket"}))
    await run(reconnect, [(False, "no_socket"), (False, "http_error")])
    assert [(r.levelno, r.getMessage().split(" (")[0]) for r in caplog.records] == [
        (logging.DEBUG, "Swarm services: cannot reach the Docker Engine"),
        (logging.WARNING, "Swarm services: cannot reach the Docker Engine"),
    ]


async def test_a_source_that_does_not_speak_for_the_engine_logs_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """The stats poll: its failures and its syncs are the Docker watch's to report."""
    caplog.set_level(logging.DEBUG, logger=log.name)
    reconnect = Reconnect(FAST, log, prefix="stats: ", speaks=False)
    await run(reconnect, [(False, "connection"), (True, "timeout")])
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 3
    assert "stats: connected again to the Docker Engine and synced" in caplog.text


async def test_a_stop_that_meets_a_failure_stops_the_loop() -> None:
    """The engine closing as the watcher stops: Python 3.11's TaskGroup raises the child's failure and
    drops the cancellation, which must still end the loop, not start the next session after a backoff."""
    closing = asyncio.Event()

    async def closed() -> None:
        await closing.wait()
        raise EngineError(EngineErrorKind.CONNECTION, "closed")

    async def session() -> NoReturn:
        async with asyncio.TaskGroup() as group:
            group.create_task(closed())
            await asyncio.Event().wait()
        raise AssertionError("unreachable")

    slow = DockerSettings(backoff_initial_seconds=30, backoff_max_seconds=30)
    task = asyncio.create_task(Reconnect(slow, log).forever(session))
    await asyncio.sleep(0.01)
    closing.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done and task.cancelled()
