"""The event pipeline: each container's work in order, containers concurrently."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from tests.polling import poll_async
from tests.unit.builders import RUNC_ERROR, Run, inspected
from watcher.config import Settings
from watcher.domain.model import DeploymentKey, State, Status
from watcher.domain.observations import InstanceSeen, Observation
from watcher.selfmetrics import SelfMetrics
from watcher.sources.docker.causes import from_inspect
from watcher.sources.docker.watch import START_POLL_BATCH, DockerWatch, _PerContainer


async def test_jobs_of_one_container_run_in_order_and_others_do_not_wait() -> None:
    """A slow job holds back later jobs of its container only."""
    done: list[str] = []
    release = asyncio.Event()

    async def job(name: str, *, wait: bool = False) -> None:
        if wait:
            await release.wait()
        done.append(name)

    async with asyncio.TaskGroup() as group:
        work = _PerContainer(group)
        work.add("a", job("a1", wait=True))
        work.add("a", job("a2"))
        work.add("b", job("b1"))
        assert work.busy("a") and work.busy("b")
        while "b1" not in done:
            await asyncio.sleep(0)
        assert done == ["b1"]  # b did not wait for a's slow inspect
        release.set()
    assert done == ["b1", "a1", "a2"]
    assert not work.busy("a") and not work.busy("b")


async def test_a_failing_job_ends_the_group_and_closes_waiting_jobs() -> None:
    """A job's error (a lost connection) cancels the rest; jobs never started are closed, not leaked."""
    started: list[str] = []

    async def fails() -> None:
        raise ConnectionResetError("gone")

    async def never() -> None:
        started.append("never")

    blocker = asyncio.Event()

    async def blocks() -> None:
        await blocker.wait()

    try:
        async with asyncio.TaskGroup() as group:
            work = _PerContainer(group)
            work.add("a", blocks())
            work.add("a", never())
            work.add("b", fails())
    except* ConnectionResetError:
        pass
    else:
        raise AssertionError("the group did not fail")
    assert started == []


class QueueFeed:
    """What the session's queue offers the reader: ``get()``."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def get(self) -> dict[str, Any] | None:
        return await self.queue.get()


async def test_a_stop_arriving_with_an_event_ends_the_reader() -> None:
    """A cancellation in the same instant as an event is not lost (Python 3.11's wait_for loses it)."""
    watch = DockerWatch(
        settings=Settings(), submit=lambda _: None, metrics=SelfMetrics(CollectorRegistry()), snapshot=State
    )
    feed = QueueFeed()
    reader = asyncio.create_task(watch._read(None, feed, None, since=0.0))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    # An untracked container's event (another container's health-check exec), then the stop.
    feed.queue.put_nowait({"Type": "container", "Action": "exec_die", "Actor": {"ID": "x"}, "timeNano": 1})
    await asyncio.sleep(0)
    reader.cancel()
    done, _ = await asyncio.wait([reader], timeout=1)
    if not done:
        reader.cancel()
    assert done == {reader} and reader.cancelled()


class FakeEngine:
    """Inspects answered from a dict, each one recorded."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.inspected: list[str] = []
        self.asked_time: list[int] = []  # how many inspects there had been at each request of the daemon's time

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        self.inspected.append(container_id)
        return self.answers.get(container_id)

    async def daemon_time(self) -> float:
        self.asked_time.append(len(self.inspected))
        return 120.0  # the daemon's clock


def container_event(action: str, cid: str, at: int, **attributes: str) -> dict[str, Any]:
    return {"Type": "container", "Action": action, "timeNano": at * 10**9,
            "Actor": {"ID": cid, "Attributes": {"deployment.name": "api", "image": "shop/api:1.0.0", **attributes}}}  # fmt: skip


def disconnect(cid: str, at: int) -> dict[str, Any]:
    return {"Type": "network", "Action": "disconnect", "timeNano": at * 10**9,
            "Actor": {"ID": "net", "Attributes": {"container": cid, "name": "bridge", "type": "bridge"}}}  # fmt: skip


async def test_a_network_disconnect_of_a_container_never_started_inspects_it() -> None:
    """After a failed start Docker 20.10 sends only the network's disconnect: the watcher inspects a
    container it saw created and not started, and nothing else (another container's, or a started one's)."""
    failed = inspected(status="created", running=False, health=None, exit_code=127)
    failed["State"]["Error"] = RUNC_ERROR
    failed["Id"] = "a"
    engine = FakeEngine({"a": failed})
    submitted: list[Any] = []
    watch = DockerWatch(
        settings=Settings(), submit=submitted.append, metrics=SelfMetrics(CollectorRegistry()), snapshot=State
    )
    async with asyncio.TaskGroup() as group:
        work = _PerContainer(group)
        for event in (
            container_event("create", "a", 100), container_event("create", "b", 100), container_event("start", "b", 101),
            disconnect("b", 102), disconnect("untracked", 102), disconnect("a", 102),
        ):  # fmt: skip
            watch._handle(engine, event, work)  # type: ignore[arg-type]
    assert engine.inspected == ["b", "a"]  # b's inspect follows its start event; a's, its disconnect
    seen = [o for o in submitted if getattr(o, "instance", None) is not None and o.instance.id == "a"]
    assert seen[-1].at == 102 and seen[-1].instance.start_error == f"exit code 127: {RUNC_ERROR}"
    watch._handle(engine, container_event("destroy", "a", 103), work)  # type: ignore[arg-type]
    assert watch._unstarted == set()


def container(cid: str, name: str, *, status: str = "created", error: str = "", code: int = 0) -> dict[str, Any]:
    """An inspect document of a container of deployment ``name``, version 1.0.0."""
    doc = inspected(status=status, running=status == "running", health=None, exit_code=code,
                    container_labels={"deployment.name": name, "deployment.version": "1.0.0"})  # fmt: skip
    doc["Id"], doc["State"]["Error"], doc["State"]["StartedAt"] = cid, error, "1970-01-01T00:01:40Z"  # 100
    return doc


async def test_containers_created_and_not_started_are_polled_for_a_failed_start() -> None:
    """A start can fail with no event at all (a container joining a stopped one's network): the containers
    of rollouts in progress created and not started are inspected every few seconds, and a failed start
    fails the rollout with the engine's error; one still created says nothing new, and containers of a
    finished rollout or running ones are not inspected."""
    error = "cannot join network of a non running container: 0123"
    docs = {"a": container("a", "api", error=error, code=128), "b": container("b", "api"),
            "w": container("w", "web", status="running"), "x": container("x", "web", error=error, code=128)}  # fmt: skip
    settings = Settings()
    cid_name = {"a": "api", "b": "api", "w": "web", "x": "web"}

    def seen(cid: str, at: float, *, as_created: bool = True) -> InstanceSeen:
        doc = container(cid, cid_name[cid], status="created") if as_created else docs[cid]
        instance, _ = from_inspect(doc, now=at, settings=settings.labels)
        assert instance is not None
        return InstanceSeen(at, instance)

    run = Run(settings)(seen("a", 100), seen("b", 100), seen("w", 100, as_created=False)).tick(111)
    run(seen("x", 112))  # joins web's finished rollout
    assert run.d(DeploymentKey("web", "production")).rollout.status is Status.SUCCESS
    engine = FakeEngine(docs)

    def submit(observation: Observation) -> None:
        run(observation, now=121)

    watch = DockerWatch(settings=settings, submit=submit, metrics=SelfMetrics(CollectorRegistry()),
                        snapshot=lambda: run.state, start_poll_seconds=0.01)  # fmt: skip
    api = DeploymentKey("api", "production")

    async def status() -> Status:
        return run.d(api).rollout.status

    async with asyncio.TaskGroup() as group:
        poller = group.create_task(watch._poll_starts(engine, _PerContainer(group)))  # type: ignore[arg-type]
        await poll_async("api failed", status, until=lambda s: s is Status.FAILED, timeout=5, interval=0.01)
        poller.cancel()
    assert run.d(api).rollout.reason == f"container a could not be started: exit code 128: {error}"
    assert set(engine.inspected) == {"a", "b"}
    assert run.d(api).members["a"].updated_at == 120  # as of the daemon's clock before the inspect


async def test_the_start_poll_is_bounded_and_everyone_has_a_turn() -> None:
    """A staged deploy of many containers created and not started: at most START_POLL_BATCH inspects a
    round, each container in turn; one still created is polled again, and nothing is reported of it."""
    settings = Settings()
    ids = [f"c{n:02}" for n in range(START_POLL_BATCH + 5)]
    docs = {cid: container(cid, "api") for cid in ids}
    run = Run(settings)
    for cid in ids:
        instance, _ = from_inspect(docs[cid], now=100, settings=settings.labels)
        assert instance is not None
        run(InstanceSeen(100, instance))
    engine = FakeEngine(docs)
    submitted: list[Observation] = []
    watch = DockerWatch(settings=settings, submit=submitted.append, metrics=SelfMetrics(CollectorRegistry()),
                        snapshot=lambda: run.state, start_poll_seconds=0.01)  # fmt: skip

    async def rounds() -> int:
        return len(engine.asked_time)

    async with asyncio.TaskGroup() as group:
        poller = group.create_task(watch._poll_starts(engine, _PerContainer(group)))  # type: ignore[arg-type]
        await poll_async("three rounds", rounds, until=lambda n: n >= 3, timeout=5, interval=0.01)
        poller.cancel()
    assert engine.asked_time[:3] == [0, START_POLL_BATCH, 2 * START_POLL_BATCH]
    assert engine.inspected[:START_POLL_BATCH] == ids[:START_POLL_BATCH]
    assert set(engine.inspected[: 2 * START_POLL_BATCH]) == set(ids)
    assert submitted == []
