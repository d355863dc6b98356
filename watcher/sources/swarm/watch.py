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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import aiodocker
import aiohttp

from watcher.config import Settings
from watcher.domain.observations import Observation, ServiceGone, ServiceSeen, ServicesListed, ServicesReleased
from watcher.selfmetrics import SelfMetrics
from watcher.sources.engine import ENGINE_ERRORS, Engine, EngineError, failures
from watcher.sources.swarm import causes

log = logging.getLogger(__name__)

SERVICE_EVENTS = {"type": ["service"]}
STATUS_API = (1, 41)  # ServiceStatus on GET /services?status=true


# A service's JSON, and its (desired, running) replicas when its tasks had to be counted (API < 1.41).
_Listed = tuple[Mapping[str, Any], tuple[int, int] | None]


class _NotLeader(Exception):
    """This engine is not (or no longer) the leader: another watcher exports the services."""

    def __init__(self, why: str, *, manager: bool) -> None:
        super().__init__(why)
        self.manager = manager


@dataclass
class SwarmWatch:
    settings: Settings
    submit: Callable[[Observation], None]
    metrics: SelfMetrics
    clock: Callable[[], float] = time.time
    following: bool = False  # this watcher speaks for the orchestrator (the leader's)
    _rolling: set[str] = field(default_factory=set)  # services whose tasks are read again
    _warned: set[str] = field(default_factory=set)
    _logged: set[str] = field(default_factory=set)  # kinds of engine failure logged since the last resync

    async def run_forever(self) -> NoReturn:
        swarm, docker = self.settings.swarm, self.settings.docker
        if swarm.services == "off":
            await asyncio.Event().wait()  # never set: no requests at all
        attempt = 0
        warned = False
        while True:
            try:
                await self._session()
            except _NotLeader as exc:
                if swarm.services == "on" and not exc.manager and not warned:
                    log.warning("swarm.services is on, but the engine is no Swarm manager: waiting until it is one")
                    warned = True
                self._release(str(exc))
                attempt = 0
                await asyncio.sleep(swarm.leader_check_seconds)
                continue
            except ENGINE_ERRORS as exc:
                # Once per kind until a session resyncs again: a lasting failure is one line. No
                # socket at all: the Docker watch says so.
                kind = exc.kind if isinstance(exc, EngineError) else type(exc).__name__
                level = logging.DEBUG if kind in self._logged or kind == "no_socket" else logging.WARNING
                self._logged.add(kind)
                log.log(level, "Swarm services: lost the Docker Engine (%s)", str(exc) or type(exc).__name__)
            cap = min(docker.backoff_max_seconds, docker.backoff_initial_seconds * 2.0**attempt)
            attempt += 1
            await asyncio.sleep(cap / 2 + random.random() * cap / 2)

    # -- one connection, while this manager is the leader

    async def _session(self) -> NoReturn:
        async with self._engine() as docker:
            node = await self._leader_node(docker)
            since = await self._daemon_time(docker)
            async with self._events(docker, since=since) as events:
                await self._resync(docker, at=since)
                self._logged.clear()
                if not self.following:
                    log.info("Swarm services: following them as the leader (node %s)", node)
                self.following = True
                await self._read(docker, events, node)
        raise AssertionError("unreachable")

    async def _read(self, docker: aiodocker.Docker, events: asyncio.Queue[Mapping[str, Any] | None], node: str) -> None:
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
                    await self._leader_node(docker, expected=node)
                    next_check = now + swarm.leader_check_seconds
                if now >= next_resync:
                    await self._resync(docker, at=await self._daemon_time(docker))
                    next_resync = now + swarm.resync_seconds
                elif self._rolling and now >= next_poll:
                    await self._poll(docker)
                next_poll = time.monotonic() + swarm.poll_seconds
                continue
            # Every event waiting is handled at once: a service's inspect says how it is now, so
            # several events of one service need one inspect, and different services' run together.
            batch = [event]
            while not events.empty():
                batch.append(events.get_nowait())
            await self._handle(docker, batch)
            next_poll = min(next_poll, time.monotonic() + swarm.poll_seconds)

    async def _handle(self, docker: aiodocker.Docker, batch: list[Mapping[str, Any] | None]) -> None:
        changed: dict[str, float] = {}  # service id → the time of its newest event
        for event in batch:
            if event is None:
                raise aiohttp.ClientError("the event stream ended")
            self.metrics.event(str(event.get("Action", "")))
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
                await self._inspect(docker, service_id, at=at)

        await asyncio.gather(*(one(service_id, at) for service_id, at in changed.items()))

    # -- requests

    @asynccontextmanager
    async def _engine(self) -> AsyncIterator[aiodocker.Docker]:
        """The shared engine client (``watcher.sources.engine``); its aiodocker handle for what only Swarm asks."""
        async with Engine.open(self.settings.docker) as engine:
            yield engine.docker

    @asynccontextmanager
    async def _events(
        self, docker: aiodocker.Docker, *, since: float
    ) -> AsyncIterator[asyncio.Queue[Mapping[str, Any] | None]]:
        """Service events from ``since`` in a queue (None: the stream ended), read in a task of its own."""
        queue: asyncio.Queue[Mapping[str, Any] | None] = asyncio.Queue()
        opened = asyncio.Event()

        async def read() -> None:
            # The shared engine's stream reader: lines of any length (to its cap), garbage as an
            # EngineError of its kind, as for container events.
            engine = Engine(docker, timeout=self.settings.docker.request_timeout_seconds)
            try:
                stream = engine.events(since=since, filters=SERVICE_EVENTS, opened=opened.set)
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        queue.put_nowait(event)
            finally:
                opened.set()
                queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            async with asyncio.timeout(self.settings.docker.request_timeout_seconds):
                await opened.wait()
            if reader.done():
                reader.result()  # raises what ended it
            yield queue
        finally:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, *ENGINE_ERRORS):
                pass

    async def _get(self, docker: aiodocker.Docker, path: str, **params: str) -> Any:
        """``GET path``: a JSON object, or for a list (``services``, ``tasks``) one of objects;
        anything else the engine answers is an EngineError, as on the Docker source's requests."""
        with failures(f"Swarm: {path}", host=self.settings.docker.host):
            async with asyncio.timeout(self.settings.docker.request_timeout_seconds):
                found = await docker._query_json(path, params=params or None)
        listed = path in ("services", "tasks")
        if not (
            isinstance(found, list) and all(isinstance(f, dict) for f in found) if listed else isinstance(found, dict)
        ):
            raise EngineError("protocol", f"Swarm: {path} answered {type(found).__name__}, not what Docker sends")
        return found

    async def _leader_node(self, docker: aiodocker.Docker, *, expected: str = "") -> str:
        """This engine's node id when it is the Swarm leader; _NotLeader when it is not (or another node now)."""
        info = await self._get(docker, "info")
        node_id = causes.node_id(info)
        if not causes.is_manager(info):
            raise _NotLeader("not a Swarm manager", manager=False)
        node = await self._get(docker, f"nodes/{node_id}")
        if not causes.leader(info, node) or (expected and node_id != expected):
            raise _NotLeader("a manager, not the leader", manager=True)
        return node_id

    async def _daemon_time(self, docker: aiodocker.Docker) -> float:
        info = await self._get(docker, "info")
        return causes.parse_time(info.get("SystemTime")) or self.clock()

    def _status_api(self, docker: aiodocker.Docker) -> bool:
        version = docker.api_version.removeprefix("v").split(".")
        try:
            return (int(version[0]), int(version[1])) >= STATUS_API
        except (ValueError, IndexError):
            return False

    async def _services(self, docker: aiodocker.Docker, *, service_id: str = "") -> list[_Listed]:
        """Services, each with its (desired, running) replicas counted from its tasks on old engines
        (None: the JSON's ``ServiceStatus`` says)."""
        params = {"filters": json.dumps({"id": [service_id]})} if service_id else {}
        status = self._status_api(docker)
        found = await self._get(docker, "services", **({"status": "true"} if status else {}), **params)
        found = [s for s in found if not service_id or s.get("ID") == service_id]  # the id filter is a prefix
        if status:
            return [(service, None) for service in found]
        listed: list[_Listed] = []
        for service in found:
            tasks = await self._get(
                docker, "tasks", filters=json.dumps({"service": [service.get("ID")], "desired-state": ["running"]})
            )
            listed.append((service, causes.replicas_from_tasks(service, tasks)))
        return listed

    async def _inspect(self, docker: aiodocker.Docker, service_id: str, *, at: float) -> None:
        found = await self._services(docker, service_id=service_id)
        if not found:
            self._rolling.discard(service_id)
            self.submit(ServiceGone(at, service_id))
            return
        seen = self._seen(*found[0], at=at)
        if seen is not None:
            self.submit(seen)

    async def _poll(self, docker: aiodocker.Docker) -> None:
        """The services whose rollout goes on, read again; concurrently: twenty services rolling
        at once must not take twenty round trips."""
        at = await self._daemon_time(docker)
        limit = asyncio.Semaphore(self.settings.docker.inspect_concurrency)

        async def one(service_id: str) -> None:
            async with limit:
                await self._inspect(docker, service_id, at=at)

        await asyncio.gather(*(one(service_id) for service_id in sorted(self._rolling)))

    async def _resync(self, docker: aiodocker.Docker, *, at: float) -> None:
        listed = [seen for s in await self._services(docker) if (seen := self._seen(*s, at=at)) is not None]
        self.submit(ServicesListed(at, tuple(listed)))
        self.metrics.resyncs.inc()
        log.info("Swarm services: resynced, %d tracked", len(listed))

    def _seen(self, data: Mapping[str, Any], replicas: tuple[int, int] | None, *, at: float) -> ServiceSeen | None:
        seen, parsed = causes.from_service(data, at=at, replicas=replicas, settings=self.settings.labels)
        service_id = str(data.get("ID", ""))
        if parsed.problems and service_id not in self._warned:
            self._warned.add(service_id)
            name = str(data.get("Spec", {}).get("Name", service_id[:12]))
            for problem in parsed.problems:
                self.metrics.label_errors.labels(problem.label).inc()
                log.warning("service %s: label %s %s", name, problem.label, problem.message)
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
