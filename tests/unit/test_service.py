"""Backoff, the core's change listeners and rule clock, supervision of root tasks, saving the state
file, and a shutdown that ends within its bound whatever hangs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn

import pytest
from prometheus_client import CollectorRegistry

from tests.polling import poll_async
from tests.unit.builders import quiet_settings, rich_state
from watcher.config import (
    DockerSettings,
    RetentionSettings,
    Settings,
    StatsSettings,
    StorageSettings,
    WebSettings,
)
from watcher.domain.events import EVENT_TYPES, DomainEvent, RolloutStarted, RolloutSuperseded
from watcher.domain.machine import Changes
from watcher.domain.model import DeploymentKey, Identity, Instance, Judge, State, Status
from watcher.domain.observations import InstanceGone, InstanceSeen, Observation, RolloutReported, Tick
from watcher.persistence.codec import decode, decode_document
from watcher.persistence.statefile import StateFile, saved_document
from watcher.runtime import core as core_module
from watcher.runtime import supervision
from watcher.runtime.compose import Watcher
from watcher.runtime.core import Core
from watcher.runtime.saver import StateSaver
from watcher.runtime.shutdown import ShutdownIncomplete
from watcher.selfmetrics import SelfMetrics
from watcher.sources.reconnect import Backoff


def test_backoff_grows_with_jitter_and_caps() -> None:
    """Delays double up to the cap; equal jitter keeps each in [cap/2, cap]; reset starts over."""
    low, high = Backoff(0.5, 4.0, rng=lambda: 0.0), Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [low.next() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert [high.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high.reset()
    assert high.next() == 0.5


class WatcherWith(Watcher):
    """A watcher with extra root tasks."""

    def __init__(self, settings: Settings, extra: dict[str, Coroutine[Any, Any, NoReturn]]) -> None:
        super().__init__(settings)
        self.extra = extra

    def _root_tasks(self) -> dict[str, Coroutine[Any, Any, NoReturn]]:
        return super()._root_tasks() | self.extra


async def serving(service: Watcher, stop: asyncio.Event) -> asyncio.Task[None]:
    running = asyncio.create_task(service.run(stop=stop))

    async def port() -> int | None:
        return service.port

    await poll_async("the service serving", port, timeout=10, interval=0.01)
    return running


def a_change(service: Watcher) -> None:
    identity = Identity(
        key=DeploymentKey("new", "production"), version="1", commit="", image="new:1", created_at=time.time(),
        deployed_at=time.time(),
    )  # fmt: skip
    service.core.submit(InstanceSeen(time.time(), Instance(id="n1", identity=identity, running=False)))


async def test_a_crashed_root_task_stops_the_service(tmp_path: Path) -> None:
    """One root task crashing ends the others and surfaces its error."""
    ended = asyncio.Event()

    async def crashes() -> NoReturn:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def forever() -> NoReturn:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.set()
        raise AssertionError("unreachable")

    service = WatcherWith(quiet_settings(tmp_path), {"crashes": crashes(), "forever": forever()})
    with pytest.raises(ExceptionGroup) as caught:
        await service.run()
    assert caught.group_contains(RuntimeError, match="boom")
    assert ended.is_set()


async def test_a_root_task_ignoring_cancellation_is_named_and_the_stop_is_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that never ends: the final save still happens, and at the bound the service gives
    up, naming the task and where it waits."""
    monkeypatch.setattr(supervision, "RECANCEL_SECONDS", 0.05)
    released = asyncio.Event()

    async def stubborn() -> NoReturn:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await released.wait()
        raise asyncio.CancelledError  # released by the test

    stop = asyncio.Event()
    service = WatcherWith(
        quiet_settings(tmp_path, directory=str(tmp_path), shutdown_timeout=0.25), {"stubborn": stubborn()}
    )
    running = await serving(service, stop)
    a_change(service)
    try:
        stop.set()
        started = time.monotonic()
        with pytest.raises(ShutdownIncomplete, match=r"did not finish within 0\.25 s"):
            await running
        assert time.monotonic() - started < 3
    finally:
        released.set()
        await asyncio.gather(*[t for t in asyncio.all_tasks() if t.get_name() == "stubborn"], return_exceptions=True)
    assert decode((tmp_path / "state.json").read_bytes()) == service.core.snapshot()
    [report] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "task 'stubborn':" in report and "in stubborn" in report and "await released.wait()" in report
    assert "still running after its cancellation; cancelling it again" in caplog.text


async def test_a_stuck_state_file_writer_is_reported_and_the_stop_is_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that never returns (a hung disk): the service gives up at the bound and shows the writer thread's stack."""
    released = threading.Event()

    def stuck(state_file: StateFile, state: State, changes: Changes, compact: bool) -> bool:
        released.wait(timeout=30)
        return False

    monkeypatch.setattr(StateSaver, "_write", staticmethod(stuck))
    stop = asyncio.Event()
    service = Watcher(quiet_settings(tmp_path, directory=str(tmp_path), shutdown_timeout=0.25))
    running = await serving(service, stop)
    a_change(service)
    try:
        stop.set()
        with pytest.raises(ShutdownIncomplete):
            await running
    finally:
        released.set()
    [report] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "thread 'state-file_0':" in report and "released.wait(timeout=30)" in report
    assert "task 'shutdown':" in report and "in save" in report


async def test_a_lost_cancellation_is_repeated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root task that swallows its cancellation once (as asyncio.wait_for does in Python 3.11
    when the result arrives in the same instant) is cancelled again: a clean stop."""
    monkeypatch.setattr(supervision, "RECANCEL_SECONDS", 0.05)

    async def swallows_once() -> NoReturn:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    stop = asyncio.Event()
    running = await serving(WatcherWith(quiet_settings(tmp_path), {"swallows once": swallows_once()}), stop)
    stop.set()
    await running
    assert "root task 'swallows once' still running after its cancellation" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_core_tells_listeners_only_when_the_state_changed() -> None:
    """on_change listeners run after a change, not after an observation that changed nothing."""
    core = Core(settings=Settings(), metrics=SelfMetrics(CollectorRegistry()), clock=lambda: 100.0)
    calls: list[int] = []
    core.on_change(lambda _: calls.append(1))
    core.submit(Tick(100.0))
    assert calls == []
    identity = Identity(
        key=DeploymentKey("api", "production"), version="1.0.0", commit="", image="api:1", created_at=99.0,
        deployed_at=99.0,
    )  # fmt: skip
    core.submit(InstanceSeen(99.0, Instance(id="c1", identity=identity, running=True, running_since=99.0)))
    assert calls == [1]


def api_instance(cid: str, version: str, at: float) -> InstanceSeen:
    identity = Identity(
        key=DeploymentKey("api", "production"), version=version, commit="", image=f"api:{version}", created_at=at,
        deployed_at=at,
    )  # fmt: skip
    return InstanceSeen(at, Instance(id=cid, identity=identity, running=True, running_since=at))


def test_subscribers_receive_every_event_of_a_step_in_order() -> None:
    """Each subscriber gets each event of the step, in the order they happened, one event at a time."""
    core = Core(settings=Settings(), metrics=SelfMetrics(CollectorRegistry()), clock=lambda: 100.0)
    received: list[tuple[str, DomainEvent]] = []
    core.subscribe(lambda event: received.append(("first", event)))
    core.subscribe(lambda event: received.append(("second", event)))
    core.submit(api_instance("c1", "1.0.0", 99.0))
    step = core.step(api_instance("c2", "2.0.0", 100.0))  # supersedes the rollout in progress
    assert [type(e) for e in step.events] == [RolloutSuperseded, RolloutStarted]
    assert received[2:] == [(name, event) for event in step.events for name in ("first", "second")]
    first = RolloutStarted(
        key=DeploymentKey("api", "production"), at=99.0, revision=1, version="1.0.0", commit="", rollback=False,
        judge=Judge.CONTAINERS,
    )  # fmt: skip
    assert received[:2] == [("first", first), ("second", first)]
    core.submit(Tick(100.0))  # no event: nothing more received
    assert len(received) == 6


def test_the_service_logs_and_counts_each_event(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Wired in the service: a log line per event (DEBUG for stale, WARNING for rejected) and the
    state_changes counter by kind, its label values there at zero from the start."""
    registry = CollectorRegistry()
    settings = dataclasses.replace(quiet_settings(tmp_path), retention=RetentionSettings(max_deployments=1))
    service = Watcher(settings, registry=registry)

    def changes(kind: str) -> float | None:
        return registry.get_sample_value("deployment_watcher_state_changes_total", {"kind": kind})

    assert {kind: changes(kind) for kind in [e.kind for e in EVENT_TYPES]} == dict.fromkeys(
        [
            "rollout_started",
            "rollout_finished",
            "superseded",
            "revised",
            "rejected",
            "dropped",
            "stale",
            "health_changed",
            "changed",
            "removed",
            "returned",
            "clock_skew",
            "analysis_measured",
            "analysis_finished",
        ],
        0.0,
    )
    caplog.set_level(logging.DEBUG, logger="watcher.runtime.compose")
    now = time.time()
    service.core.submit(api_instance("c1", "1.0.0", now))
    service.core.submit(InstanceGone(now - 10, "c1"))  # older than what the state holds
    other = Identity(
        key=DeploymentKey("web", "staging"), version="1", commit="", image="web:1", created_at=now, deployed_at=now
    )
    service.core.submit(InstanceSeen(now, Instance(id="w1", identity=other, running=False)))
    lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith("deployment ")]
    assert lines == [
        ("watcher.runtime.compose", logging.INFO, "deployment api/production: rollout to 1.0.0 started (revision 1)"),
        (
            "watcher.runtime.compose", logging.DEBUG,
            "deployment api/production: ignored an observation of c1 older than the last one",
        ),
        ("watcher.runtime.compose", logging.WARNING, "deployment web/staging: cap of 1 deployments reached"),
    ]  # fmt: skip
    assert (changes("rollout_started"), changes("stale"), changes("rejected"), changes("rollout_finished")) == (
        1.0, 1.0, 1.0, 0.0,
    )  # fmt: skip


def test_the_service_warns_of_and_counts_each_time_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A time refused for clock skew: a WARNING naming it, counted by source (every source there at zero)."""
    registry = CollectorRegistry()
    service = Watcher(quiet_settings(tmp_path), registry=registry)

    def skewed(source: str) -> float | None:
        return registry.get_sample_value("deployment_watcher_clock_skew_total", {"source": source})

    assert [skewed(s) for s in ("started_at", "finished_at", "commit_time", "deployment.timestamp")] == [0.0] * 4
    caplog.set_level(logging.INFO, logger="watcher.runtime.compose")
    now = time.time()
    service.core.submit(
        RolloutReported(at=now, key=DeploymentKey("fn", "production"), version="1", commit="", status=Status.SUCCESS,
                        started_at=now + 8 * 3600, commit_time=now + 60)
    )  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "deployment fn/production: started_at lies 28800 s after the moment the watcher observed it (clock skew?); "
        "using the report's arrival",
        "deployment fn/production: commit_time lies 60 s after the moment the watcher observed it (clock skew?); "
        "no lead time",
    ]
    assert (skewed("started_at"), skewed("commit_time"), skewed("finished_at")) == (1.0, 1.0, 0.0)
    assert registry.get_sample_value("deployment_watcher_state_changes_total", {"kind": "clock_skew"}) == 2.0


class CountingCore(Core):
    ticks = 0

    def submit(self, observation: Observation) -> None:
        self.ticks += isinstance(observation, Tick)
        super().submit(observation)


async def test_the_clock_stops_while_the_data_may_be_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ticks while the source is disconnected (no stable-time success or deadline on stale
    data); ticks again once it is back."""
    monkeypatch.setattr(core_module, "TICK_SECONDS", 0.001)
    connected = asyncio.Event()
    core = CountingCore(settings=Settings(), metrics=SelfMetrics(CollectorRegistry()))
    clock = asyncio.create_task(core.tick_forever(fresh=connected.is_set))
    try:
        await asyncio.sleep(0.05)  # the point: 50 ticks' time passes, disconnected
        assert core.ticks == 0
        connected.set()

        async def ticks() -> int:
            return core.ticks

        await poll_async("three ticks", ticks, timeout=5, interval=0.001, until=lambda n: n >= 3)
    finally:
        clock.cancel()


async def test_service_loads_saves_on_change_and_at_stop(tmp_path: Path) -> None:
    """The saved state is the core's first state; changes reach the file after the debounce, the last ones at stop."""
    saved = rich_state()
    StateFile(str(tmp_path), metrics=SelfMetrics(CollectorRegistry())).save(saved)
    settings = Settings(
        web=WebSettings(listen_address="127.0.0.1:0"),
        docker=DockerSettings(host=f"unix://{tmp_path}/no-docker.sock", backoff_initial_seconds=5),
        stats=StatsSettings(enabled=False),
        storage=StorageSettings(directory=str(tmp_path), debounce_seconds=0.05),
    )
    service = Watcher(settings)
    assert service.core.snapshot() == saved
    assert service.registry.get_sample_value("deployment_watcher_tracked_deployments") == len(saved.deployments)

    def on_disk() -> State:
        return decode_document(saved_document(tmp_path))

    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop=stop))
    identity = Identity(
        key=DeploymentKey("new", "production"), version="1", commit="", image="new:1", created_at=time.time(),
        deployed_at=time.time(),
    )  # fmt: skip
    service.core.submit(InstanceSeen(time.time(), Instance(id="n1", identity=identity, running=False)))

    async def caught_up() -> bool:
        return on_disk() == service.core.snapshot()

    await poll_async("the change saved", caught_up, timeout=10, interval=0.02)
    service.core.submit(InstanceGone(time.time(), "n1"))
    stop.set()  # before the debounce ends: the final save has it
    await running
    assert on_disk() == service.core.snapshot()
    assert on_disk().deployments[DeploymentKey("new", "production")].members == {}
    assert (service.registry.get_sample_value("deployment_watcher_state_saves_total") or 0) >= 2


async def test_loaded_state_is_not_judged_by_the_clock_before_the_first_resync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker unreachable after a restart: a saved rollout long past its deadline stays in progress."""
    monkeypatch.setattr(core_module, "TICK_SECONDS", 0.01)
    saved = rich_state()
    api = DeploymentKey("api", "production")
    assert saved.deployments[api].rollout.status is Status.IN_PROGRESS
    StateFile(str(tmp_path), metrics=SelfMetrics(CollectorRegistry())).save(saved)
    settings = Settings(
        web=WebSettings(listen_address="127.0.0.1:0"),
        docker=DockerSettings(host=f"unix://{tmp_path}/no-docker.sock", backoff_initial_seconds=5),
        stats=StatsSettings(enabled=False),
        storage=StorageSettings(directory=str(tmp_path)),
    )
    service = Watcher(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop=stop))
    await asyncio.sleep(0.3)  # the point: 30 ticks' time passes without a resync, and judges nothing
    stop.set()
    await running
    assert service.core.snapshot() is service.saver.saved
    assert service.core.snapshot().deployments[api].rollout.status is Status.IN_PROGRESS


async def test_tick_counts_asyncio_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 1 s clock also sets the asyncio task gauge: this test's task, the clock's, and a sleeper."""
    monkeypatch.setattr(core_module, "TICK_SECONDS", 0.01)
    registry = CollectorRegistry()
    core = Core(settings=Settings(), metrics=SelfMetrics(registry), clock=lambda: 100.0)
    sleeper = asyncio.create_task(asyncio.sleep(3600))
    clock = asyncio.create_task(core.tick_forever(fresh=lambda: True))
    try:

        async def tasks() -> float | None:
            return registry.get_sample_value("deployment_watcher_asyncio_tasks")

        assert await poll_async("tasks counted", tasks, timeout=5, interval=0.01) == 3
    finally:
        for task in (sleeper, clock):
            task.cancel()
        await asyncio.gather(sleeper, clock, return_exceptions=True)
