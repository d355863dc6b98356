"""Docker Engine → observations, forever.

Three levels, as in kopf: ``run_forever`` reconnects with jittered backoff (the loop every
engine-backed source shares, ``watcher.sources.reconnect``); ``_session`` is one connection
(subscribe, then relist, then stream); ``_handle`` is one event.

The stream is read without waiting for inspects: the daemon drops events of a client that
stops reading, and an inspect of a container being started waits for the start (up to
seconds under load). A create or start event is applied from the event alone; the inspect
after a start adds what only it says (a health check, the restart count), and the rules wait
for it. Each container's events are applied in order, containers concurrently
(``_PerContainer``); the state machine does not depend on the order across containers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, Protocol

from watcher.config import Settings
from watcher.domain import labels
from watcher.domain.model import Instance, Origin, State
from watcher.domain.observations import InstanceChange, InstanceGone, InstanceSeen, InstanceStarted, Observation, Resync
from watcher.selfmetrics import EngineErrorKind, SelfMetrics
from watcher.sources.docker import causes as docker_causes
from watcher.sources.docker.causes import Inspect
from watcher.sources.engine import Engine, EngineError
from watcher.sources.jsonfields import event_time
from watcher.sources.labelproblems import LabelProblems
from watcher.sources.reconnect import Reconnect, subscribed
from watcher.sources.source import Given, Source

log = logging.getLogger(__name__)

# Network events too: after a start that fails, a network's `disconnect` is all Docker sends.
CONTAINER_EVENTS = {"type": ["container", "network"]}
# Seconds within which an event the daemon sent has reached us; the silence check looks for
# events older than this that the stream did not deliver.
DELIVERY_MARGIN = 2.0
# Containers of rollouts in progress created and not started are inspected every few seconds, at
# most this many a round, each in turn: a staged deploy of hundreds stays cheap.
START_POLL_BATCH = 20


class EventFeed(Protocol):
    """Where the reader takes events from: the stream's events in order, then why it ended."""

    async def get(self) -> Mapping[str, Any] | EngineError: ...


class _PerContainer:
    """Jobs run in arrival order per container, and concurrently across containers."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self._last: dict[str, asyncio.Task[None]] = {}  # the newest job of each busy container

    def busy(self, container_id: str) -> bool:
        return container_id in self._last

    def add(self, container_id: str, job: Coroutine[Any, Any, None]) -> None:
        task = self._group.create_task(self._after(self._last.get(container_id), job))
        self._last[container_id] = task
        task.add_done_callback(lambda done: self._forget(container_id, done))
        # Cancelled before it began (waiting for the previous, or not yet running): closed, not
        # left unawaited. After it ran, close() does nothing.
        task.add_done_callback(lambda _: job.close())

    @staticmethod
    async def _after(previous: asyncio.Task[None] | None, job: Coroutine[Any, Any, None]) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its failure is reported by the group, once
        await job

    def _forget(self, container_id: str, task: asyncio.Task[None]) -> None:
        if self._last.get(container_id) is task:
            del self._last[container_id]


@dataclass
class DockerWatch(Source):
    settings: Settings
    submit: Callable[[Observation], None]
    metrics: SelfMetrics
    snapshot: Callable[[], State]  # the state now: which containers await a start
    clock: Callable[[], float] = time.time
    # How soon a start that failed with no event at all is seen (``_poll_starts``).
    start_poll_seconds: float = 2.0
    name: ClassVar[str] = "docker watch"
    _connection: Reconnect = field(init=False)  # subscribed and synced: what /ready reports, or why not
    _problems: LabelProblems = field(init=False)
    # Tracked containers created and never started: a network disconnect of one is a failed start.
    _unstarted: set[str] = field(default_factory=set)
    _inspecting: asyncio.Semaphore = field(init=False)  # bounds inspects of events in flight

    def __post_init__(self) -> None:
        self._inspecting = asyncio.Semaphore(self.settings.docker.inspect_concurrency)
        self._problems = LabelProblems("container", log, self.metrics, analysis_off=not self.settings.analysis.enabled)
        self._connection = Reconnect(self.settings.docker, log, failed=self._failed, up=self.metrics.docker_up.set)

    @classmethod
    def given(cls, given: Given) -> DockerWatch:
        return cls(settings=given.settings, submit=given.submit, metrics=given.metrics, snapshot=given.snapshot)

    def fresh(self) -> bool:
        return self._connection.connected

    def problem(self) -> str:
        return self._connection.problem

    # -- level 1: forever

    async def run_forever(self) -> NoReturn:
        """Sessions, one after the other, for ever (``watcher.sources.reconnect``): whatever the
        engine does ends a session at most (an ``EngineError``), counted by kind."""
        await self._connection.forever(self._session)

    def _failed(self, error: EngineError) -> None:
        self.metrics.docker_errors.labels(error.kind).inc()
        self.metrics.reconnects.inc()

    # -- level 2: one connection

    async def _session(self) -> NoReturn:
        async with Engine.open(self.settings.docker) as engine:
            since = await self._daemon_time(engine)
            # `since` closes the gap between the daemon flushing the response headers and
            # registering the subscription; the relist below, not `since`, is the truth.
            async with subscribed(engine, since=since, filters=CONTAINER_EVENTS) as feed:
                await self._resync(engine, at=since)
                self._connection.synced()
                await self._stream(engine, feed, since=since)

    async def _stream(self, engine: Engine, feed: EventFeed, *, since: float) -> NoReturn:
        # An inspect failing with a connection error ends the group, hence the session.
        async with asyncio.TaskGroup() as group:
            work = _PerContainer(group)
            group.create_task(self._poll_starts(engine, work))
            await self._read(engine, feed, work, since=since)
        raise AssertionError("unreachable")  # _read never returns

    async def _poll_starts(self, engine: Engine, work: _PerContainer) -> NoReturn:
        """Inspect, every ``start_poll_seconds``, the containers of rollouts in progress that were
        created and not started: a start can fail with no event at all (a container joining a
        stopped one's network, ``--network container:X`` or compose's ``network_mode: service:…``:
        only its ``create``, on Docker 20.10 and 26.1), and only the engine's state tells."""
        last = ""  # the id polled last: rounds go on from there, so every container has its turn
        while True:
            await asyncio.sleep(self.start_poll_seconds)
            waiting = sorted(i for i in self.snapshot().unstarted_instance_ids() if not work.busy(i))
            if not waiting:
                continue
            batch = ([i for i in waiting if i > last] + [i for i in waiting if i <= last])[:START_POLL_BATCH]
            last = batch[-1]
            # The daemon's clock, read before the inspects: an event that follows one is newer.
            at = await self._daemon_time(engine)
            for container_id in batch:
                work.add(container_id, self._check_start(engine, Inspect(at, container_id)))

    async def _read(self, engine: Engine, feed: EventFeed, work: _PerContainer, *, since: float) -> NoReturn:
        resync_every = self.settings.docker.resync_seconds
        silence = self.settings.docker.silence_seconds
        next_resync = time.monotonic() + resync_every
        heard = since  # the daemon's time of the newest event the stream delivered
        while True:
            wait = silence if not resync_every else max(0.0, min(silence, next_resync - time.monotonic()))
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
                # arrives with an event, and the stop would never end this loop.
                async with asyncio.timeout(wait):
                    event = await feed.get()
            except TimeoutError:
                if resync_every and time.monotonic() >= next_resync:
                    await self._resync(engine, at=await self._daemon_time(engine))
                    next_resync = time.monotonic() + resync_every
                else:
                    await self._check_silence(engine, heard=heard)
                continue
            if isinstance(event, EngineError):  # why the stream ended
                raise event
            heard = max(heard, event_time(event) or heard)
            self._handle(engine, event, work)

    async def _check_silence(self, engine: Engine, *, heard: float) -> None:
        """No event for a while: a hung daemon does not answer, and a stream that stalled while
        the daemon still answers (a proxy, a NAT dropping the connection) has missed events
        that the daemon lists when asked for the time since the last one delivered."""
        until = await self._daemon_time(engine) - DELIVERY_MARGIN
        if until <= heard:
            return
        for event in await engine.events_between(since=heard, until=until, filters=CONTAINER_EVENTS):
            if (event_time(event) or heard) > heard:
                action = docker_causes.event_action(event)[:64]
                raise EngineError(
                    EngineErrorKind.CONNECTION, f"the event stream did not deliver a {action} event the daemon lists"
                )

    async def _resync(self, engine: Engine, *, at: float) -> None:
        """Rebuild from what exists: every reconnect is a full resync."""
        # Labelled containers, and Swarm tasks (their service's labels are not on them): two
        # lists, as label filters of one list must all match.
        label_filters = (
            [{}]
            if self.settings.labels.track_compose
            else [{"label": [name]} for name in (labels.NAME, labels.SWARM_SERVICE_ID)]
        )
        listed: dict[str, Mapping[str, Any]] = {}
        for label_filter in label_filters:
            listed |= await engine.labels(label_filter)
        ids = [i for i, found in listed.items() if labels.is_tracked(found, settings=self.settings.labels)]
        limit = asyncio.Semaphore(self.settings.docker.inspect_concurrency)

        async def inspect(container_id: str) -> Instance | None:
            async with limit:
                data = await engine.inspect(container_id)
            return self._instance(data) if data else None

        found = await asyncio.gather(*(inspect(i) for i in ids))
        instances = tuple(i for i in found if i is not None)
        self._problems.keep_only({i.id for i in instances})
        self._unstarted = {i.id for i in instances if i.unstarted}
        self.submit(Resync(at, Origin.CONTAINER, instances))
        self.metrics.resyncs.inc()
        log.info("resynced: %d tracked containers", len(instances))

    # -- level 3: one event

    def _handle(self, engine: Engine, event: Mapping[str, Any], work: _PerContainer) -> None:
        if event.get("Type") == "network":  # followed only to hear of failed starts
            disconnected, at = docker_causes.network_disconnect(event), event_time(event)
            if disconnected in self._unstarted and at is not None:
                work.add(disconnected, self._seen(engine, Inspect(at, disconnected)))
            return
        self.metrics.event(docker_causes.event_action(event))
        if not docker_causes.is_tracked(event, settings=self.settings.labels):
            return
        cause = docker_causes.classify(event)
        if cause is None:
            return
        if isinstance(cause, InstanceChange):
            self._unstarted.discard(cause.instance_id)  # started, exited or gone
        if isinstance(cause, Inspect) and docker_causes.event_action(event) == "create":
            instance, parsed = docker_causes.from_create_event(
                event, cause, settings=self.settings.labels, analysis=self.settings.analysis
            )
            if instance is not None:
                self._problems.report(instance.id, docker_causes.event_attributes(event).get("name", ""), parsed)
                self._unstarted.add(instance.id)
                self._apply(InstanceSeen(cause.at, instance))
                return
        if isinstance(cause, Inspect):
            work.add(cause.container_id, self._seen(engine, cause))
            return
        if work.busy(cause.instance_id):
            work.add(cause.instance_id, self._changed(cause))  # after that container's inspect
        else:
            self._apply(cause)
        if isinstance(cause, InstanceStarted):
            # Running as of now; the rules wait for what only the inspect says (health check).
            work.add(cause.instance_id, self._seen(engine, Inspect(cause.at, cause.instance_id)))

    async def _seen(self, engine: Engine, cause: Inspect) -> None:
        async with self._inspecting:
            data = await engine.inspect(cause.container_id)
        instance = self._instance(data) if data else None
        if instance is None:
            return  # gone already (its destroy event follows) or not a deployment
        if instance.unstarted:
            self._unstarted.add(instance.id)
        else:
            self._unstarted.discard(instance.id)
        self._apply(InstanceSeen(cause.at, instance))

    async def _check_start(self, engine: Engine, cause: Inspect) -> None:
        """A failed start, if the engine's state shows one; anything else comes with its events."""
        async with self._inspecting:
            data = await engine.inspect(cause.container_id)
        instance = self._instance(data) if data else None
        if instance is not None and instance.start_error:
            self._unstarted.discard(instance.id)
            self.submit(InstanceSeen(cause.at, instance))

    async def _changed(self, change: InstanceChange) -> None:
        self._apply(change)

    def _apply(self, observation: InstanceSeen | InstanceChange) -> None:
        if isinstance(observation, InstanceGone):
            self._problems.forget(observation.instance_id)
        self.submit(observation)
        self.metrics.event_lag.observe(max(0.0, self.clock() - observation.at))

    # -- requests and helpers

    async def _daemon_time(self, engine: Engine) -> float:
        """The daemon's clock: event times and resyncs must be on one timeline."""
        return await engine.daemon_time() or self.clock()

    def _instance(self, data: Mapping[str, Any]) -> Instance | None:
        instance, parsed = docker_causes.from_inspect(
            data, now=self.clock(), settings=self.settings.labels, analysis=self.settings.analysis
        )
        self._problems.report(str(data.get("Id", "")), str(data.get("Name", "")).lstrip("/"), parsed)
        return instance
