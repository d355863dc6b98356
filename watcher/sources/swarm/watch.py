"""The Swarm orchestrator → observations, on the leader manager, forever.

Modelled on Traefik's two Docker providers (containers and Swarm: one data shape, one builder):
this source follows ``type=service`` events (``create``, ``update``, ``remove``; they carry no
labels, so every one is inspected), relists every service at each (re)connect and every
``swarm.resync_seconds``, and reads the tasks of services whose rollout is still going every
``swarm.poll_seconds``, since the engine emits no task events. Replicas come from
``GET /services?status=true`` (API ≥ 1.41), else from ``GET /tasks``.

Only the leader's watcher follows services, so several managers never export a service twice;
the others (and workers) keep their task containers' CPU and memory, which the container
source reports. Leadership is checked at every connect and every ``swarm.leader_check_seconds``.
The leader's watcher alone asks Swarm for the rollbacks that failed analyses want (``rollback``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

from watcher.config import Settings
from watcher.domain.model import State
from watcher.domain.observations import Observation, ServiceGone, ServiceSeen, ServicesListed, ServicesReleased
from watcher.selfmetrics import EngineErrorKind, SelfMetrics
from watcher.sources.engine import Engine, EngineError
from watcher.sources.labelproblems import LabelProblems
from watcher.sources.reconnect import Reconnect, subscribed
from watcher.sources.source import Given, Source
from watcher.sources.swarm import causes
from watcher.sources.swarm.rollback import Rollbacks

log = logging.getLogger(__name__)

SERVICE_EVENTS = {"type": ["service"]}
STATUS_API = (1, 41)  # ServiceStatus on GET /services?status=true
PREFIX = "Swarm services: "  # before its lines: the Docker watch speaks of the same engine


# A service's JSON, and its (desired, running) replicas when its tasks had to be counted (API < 1.41).
_Listed = tuple[Mapping[str, Any], tuple[int, int] | None]


class _NotLeader(Exception):
    """This engine is not (or no longer) the leader: another watcher exports the services."""

    def __init__(self, why: str, *, manager: bool) -> None:
        super().__init__(why)
        self.manager = manager


@dataclass
class SwarmWatch(Source):
    settings: Settings
    submit: Callable[[Observation], None]
    metrics: SelfMetrics
    clock: Callable[[], float] = time.time
    following: bool = False  # this watcher speaks for the orchestrator (the leader's)
    snapshot: Callable[[], State] | None = None  # the state, read for the rollbacks wanted (None: none asked)
    name: ClassVar[str] = "swarm watch"
    _connection: Reconnect = field(init=False)
    _rolling: set[str] = field(default_factory=set)  # services whose tasks are read again
    _problems: LabelProblems = field(init=False)
    _said_no_manager: bool = False  # warned once that swarm.services is on for no manager
    _with_status: bool = False  # the engine counts replicas (``_status_api``), read at each connect
    _rollbacks: Rollbacks | None = None  # asks the rollbacks that failed analyses want, when allowed

    def __post_init__(self) -> None:
        self._problems = LabelProblems("service", log, self.metrics, analysis_off=not self.settings.analysis.enabled)
        # No socket at all: the Docker watch says so.
        self._connection = Reconnect(
            self.settings.docker, log, prefix=PREFIX, quiet=frozenset({EngineErrorKind.NO_SOCKET})
        )
        analysis = self.settings.analysis
        if self.snapshot is not None and analysis.enabled and analysis.allow_rollback:
            self._rollbacks = Rollbacks(self.settings, self.submit, self.metrics, self.snapshot, self.clock)

    @classmethod
    def given(cls, given: Given) -> SwarmWatch:
        return cls(settings=given.settings, submit=given.submit, metrics=given.metrics, snapshot=given.snapshot)

    def fresh(self) -> bool:
        """What it reported of services is current; nothing to be stale while it follows none."""
        return not self.following or self._connection.connected

    def problem(self) -> str:
        return PREFIX + self._connection.problem

    async def run_forever(self) -> NoReturn:
        if self.settings.swarm.services == "off":
            await asyncio.Event().wait()  # never set: no requests at all
        await self._connection.forever(self._session)

    # -- one connection: following the services while this manager is the leader

    async def _session(self) -> NoReturn:
        swarm = self.settings.swarm
        async with Engine.open(self.settings.docker) as engine:
            while True:
                try:
                    await self._follow(engine)
                except _NotLeader as exc:
                    if swarm.services == "on" and not exc.manager and not self._said_no_manager:
                        log.warning("swarm.services is on, but the engine is no Swarm manager: waiting until it is one")
                        self._said_no_manager = True
                    self._release(str(exc))
                    self._connection.answered()
                    await asyncio.sleep(swarm.leader_check_seconds)

    async def _follow(self, engine: Engine) -> NoReturn:
        node = await self._leader_node(engine)
        self._with_status = await self._status_api(engine)
        since = await self._daemon_time(engine)
        async with subscribed(engine, since=since, filters=SERVICE_EVENTS) as events:
            await self._resync(engine, at=since)
            if not self.following:
                log.info("Swarm services: following them as the leader (node %s)", node)
            self.following = True
            self._connection.synced()
            async with self._rollbacks.beside(engine) if self._rollbacks else contextlib.nullcontext():
                await self._read(engine, events, node)
        raise AssertionError("unreachable")

    async def _read(self, engine: Engine, events: asyncio.Queue[Mapping[str, Any] | EngineError], node: str) -> None:
        swarm = self.settings.swarm
        now = time.monotonic()
        next_check, next_resync, next_poll = now + swarm.leader_check_seconds, now + swarm.resync_seconds, now
        while True:
            due = min(next_check, next_resync, next_poll if self._rolling else next_check)
            try:
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    event = await events.get()
            except TimeoutError:
                now = time.monotonic()
                if now >= next_check:
                    await self._leader_node(engine, expected=node)
                    next_check = now + swarm.leader_check_seconds
                if now >= next_resync:
                    await self._resync(engine, at=await self._daemon_time(engine))
                    next_resync = now + swarm.resync_seconds
                elif self._rolling and now >= next_poll:
                    await self._poll(engine)
                next_poll = time.monotonic() + swarm.poll_seconds
                continue
            # Every event waiting is handled at once: a service's inspect says how it is now, so
            # several events of one service need one inspect, and different services' run together.
            batch = [event]
            while not events.empty():
                batch.append(events.get_nowait())
            await self._handle(engine, batch)
            next_poll = min(next_poll, time.monotonic() + swarm.poll_seconds)

    async def _handle(self, engine: Engine, batch: list[Mapping[str, Any] | EngineError]) -> None:
        changed: dict[str, float] = {}  # service id → the time of its newest event
        for event in batch:
            if isinstance(event, EngineError):  # why the stream ended
                raise event
            self.metrics.swarm_event(str(event.get("Action", "")))
            cause = causes.classify(event)
            if cause is None:
                continue
            if cause.removed:
                changed.pop(cause.service_id, None)
                self._rolling.discard(cause.service_id)
                self.submit(ServiceGone(cause.at, cause.service_id))
            else:
                changed[cause.service_id] = cause.at
        limit = asyncio.Semaphore(self.settings.docker.inspect_concurrency)

        async def one(service_id: str, at: float) -> None:
            async with limit:
                await self._inspect(engine, service_id, at=at)

        await asyncio.gather(*(one(service_id, at) for service_id, at in changed.items()))

    # -- requests

    async def _leader_node(self, engine: Engine, *, expected: str = "") -> str:
        """This engine's node id when it is the Swarm leader; _NotLeader when it is not (or another node now)."""
        info = await engine.info()
        node_id = causes.node_id(info)
        if not causes.is_manager(info):
            raise _NotLeader("not a Swarm manager", manager=False)
        node = await engine.get(f"nodes/{node_id}")
        if not causes.leader(info, node) or (expected and node_id != expected):
            raise _NotLeader("a manager, not the leader", manager=True)
        return node_id

    async def _daemon_time(self, engine: Engine) -> float:
        return await engine.daemon_time() or self.clock()

    @staticmethod
    async def _status_api(engine: Engine) -> bool:
        """Whether the engine counts replicas itself (API ≥ 1.41; unversioned requests get its newest)."""
        version = str((await engine.get("version")).get("ApiVersion", "")).split(".")
        try:
            return (int(version[0]), int(version[1])) >= STATUS_API
        except (ValueError, IndexError):
            return False

    async def _services(self, engine: Engine, *, service_id: str = "") -> list[_Listed]:
        """Services, each with its (desired, running) replicas counted from its tasks on old engines
        (None: the JSON's ``ServiceStatus`` says)."""
        params = {"filters": json.dumps({"id": [service_id]})} if service_id else {}
        found = await engine.listed("services", **({"status": "true"} if self._with_status else {}), **params)
        found = [s for s in found if not service_id or s.get("ID") == service_id]  # the id filter is a prefix
        if self._with_status:
            return [(service, None) for service in found]
        listed: list[_Listed] = []
        for service in found:
            tasks = await engine.listed(
                "tasks", filters=json.dumps({"service": [service.get("ID")], "desired-state": ["running"]})
            )
            listed.append((service, causes.replicas_from_tasks(service, tasks)))
        return listed

    async def _inspect(self, engine: Engine, service_id: str, *, at: float) -> None:
        found = await self._services(engine, service_id=service_id)
        if not found:
            self._rolling.discard(service_id)
            self.submit(ServiceGone(at, service_id))
            return
        seen = self._seen(*found[0], at=at)
        if seen is not None:
            self.submit(seen)

    async def _poll(self, engine: Engine) -> None:
        """The services whose rollout goes on, read again; concurrently: twenty services rolling
        at once must not take twenty round trips."""
        at = await self._daemon_time(engine)
        limit = asyncio.Semaphore(self.settings.docker.inspect_concurrency)

        async def one(service_id: str) -> None:
            async with limit:
                await self._inspect(engine, service_id, at=at)

        await asyncio.gather(*(one(service_id) for service_id in sorted(self._rolling)))

    async def _resync(self, engine: Engine, *, at: float) -> None:
        listed = [seen for s in await self._services(engine) if (seen := self._seen(*s, at=at)) is not None]
        self.submit(ServicesListed(at, tuple(listed)))
        self.metrics.resyncs.inc()
        log.info("Swarm services: resynced, %d tracked", len(listed))

    def _seen(self, data: Mapping[str, Any], replicas: tuple[int, int] | None, *, at: float) -> ServiceSeen | None:
        seen, parsed = causes.from_service(
            data, at=at, replicas=replicas, settings=self.settings.labels, analysis=self.settings.analysis
        )
        service_id = str(data.get("ID", ""))
        self._problems.report(service_id, str(data.get("Spec", {}).get("Name", "")), parsed)
        if seen is None:
            self._rolling.discard(service_id)
            return None
        if causes.is_rolling(seen):
            self._rolling.add(service_id)
        else:
            self._rolling.discard(service_id)
        return seen

    def _release(self, why: str) -> None:
        if self.following:
            log.info("Swarm services: no longer following them (%s)", why)
            self.submit(ServicesReleased(self.clock()))
            self.following = False
        self._rolling.clear()
