"""Backoff, the core's change listeners, and supervision of root tasks."""

from __future__ import annotations

import asyncio
from typing import NoReturn

import pytest
from prometheus_client import CollectorRegistry

from watcher.config import Settings
from watcher.docker_watch import Backoff
from watcher.observations import DeploymentKey, Identity, Instance, InstanceSeen, Tick
from watcher.selfmetrics import SelfMetrics
from watcher.service import Core, _supervise


def test_backoff_grows_with_jitter_and_caps() -> None:
    """Delays double up to the cap; equal jitter keeps each in [cap/2, cap]; reset starts over."""
    low, high = Backoff(0.5, 4.0, rng=lambda: 0.0), Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [low.next() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert [high.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high.reset()
    assert high.next() == 0.5


async def test_supervise_stops_all_when_one_task_dies() -> None:
    """One root task crashing cancels the others and surfaces its error."""
    cancelled = asyncio.Event()

    async def crashes() -> NoReturn:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def forever() -> NoReturn:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    with pytest.raises(ExceptionGroup) as caught:
        await _supervise({"crashes": crashes(), "forever": forever()}, stop=asyncio.Event())
    assert caught.group_contains(RuntimeError, match="boom")
    assert cancelled.is_set()


async def test_supervise_returns_cleanly_on_stop() -> None:
    """Setting the stop event ends supervision without an error."""
    stop = asyncio.Event()

    async def forever() -> NoReturn:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    asyncio.get_running_loop().call_later(0.01, stop.set)
    await _supervise({"forever": forever()}, stop=stop)


def test_core_tells_listeners_only_when_the_state_changed() -> None:
    """on_change listeners run after a change, not after an observation that changed nothing."""
    core = Core(settings=Settings(), metrics=SelfMetrics(CollectorRegistry()), clock=lambda: 100.0)
    calls: list[int] = []
    core.on_change(lambda: calls.append(1))
    core.submit(Tick(100.0))
    assert calls == []
    identity = Identity(
        key=DeploymentKey("api", "production"), version="1.0.0", commit="", image="api:1", created_at=99.0,
        deployed_at=99.0,
    )  # fmt: skip
    core.submit(InstanceSeen(99.0, Instance(id="c1", identity=identity, running=True, running_since=99.0)))
    assert calls == [1]


async def test_tick_counts_asyncio_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 1 s clock also sets the asyncio task gauge: this test's task, the clock's, and a sleeper."""
    monkeypatch.setattr("watcher.service.TICK_SECONDS", 0.01)
    registry = CollectorRegistry()
    core = Core(settings=Settings(), metrics=SelfMetrics(registry), clock=lambda: 100.0)
    sleeper = asyncio.create_task(asyncio.sleep(3600))
    clock = asyncio.create_task(core.tick_forever())
    try:
        while registry.get_sample_value("deployment_watcher_asyncio_tasks") == 0:
            await asyncio.sleep(0.01)
        assert registry.get_sample_value("deployment_watcher_asyncio_tasks") == 3
    finally:
        for task in (sleeper, clock):
            task.cancel()
        await asyncio.gather(sleeper, clock, return_exceptions=True)
