"""CPU and memory of running tracked containers, polled every stats interval.

Two sources with one ``sample()``: cgroup files (``watcher.cgroups``, microseconds a
container) and the Docker stats API (about a second a container, in parallel); with
``stats.source: auto`` the first poll with containers tells whether the files can be read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, Protocol

from watcher.config import Settings
from watcher.domain.model import State, Usage
from watcher.domain.observations import UsageSampled
from watcher.selfmetrics import SelfMetrics
from watcher.sources.engine import Engine, EngineError
from watcher.sources.reconnect import Reconnect
from watcher.sources.source import Given, Source
from watcher.sources.stats.cgroups import CgroupStats, detect_hierarchy, layout_problem, working_set

log = logging.getLogger(__name__)


def usage_from_stats(stats: Mapping[str, Any]) -> Usage | None:
    """One stats API sample → Usage; memory as `docker stats` computes it (usage minus inactive file)."""
    try:
        cpu_ns = float(stats["cpu_stats"]["cpu_usage"]["total_usage"])
        memory = stats["memory_stats"]
        usage = float(memory["usage"])
        stat = {key: float(value) for key, value in (memory.get("stats") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None  # a container that stopped between listing and sampling, or not Docker's answer
    if not all(math.isfinite(number) for number in (cpu_ns, usage, *stat.values())):
        return None
    # The API passes the cgroup's memory.stat through: the cgroup source's formula applies as is.
    return Usage(cpu_seconds=cpu_ns / 1e9, memory_bytes=working_set(usage, stat))


class StatsSource(Protocol):
    async def sample(self, container_ids: list[str]) -> tuple[dict[str, Usage], int]:
        """Usage of each container that could be read, and how many could not."""


def choose_source(*, requested: str, layout_problem: str | None, probed: int, readable: int) -> str | None:
    """``cgroup`` or ``api`` for ``stats.source``; None while ``auto`` has had no running container to try.

    ``auto`` takes the stats API when the cgroup tree is not there, else cgroup files when
    they read for any of the containers probed (a remote daemon's containers never do).
    """
    if requested != "auto":
        return requested
    if layout_problem is not None:
        return "api"
    if not probed:
        return None
    return "cgroup" if readable else "api"


class ApiStats:
    """Samples through the Docker stats API (about a second per container, so in parallel)."""

    def __init__(self, engine: Engine, *, concurrency: int, timeout: float) -> None:
        self._engine = engine
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout = timeout

    async def sample(self, container_ids: list[str]) -> tuple[dict[str, Usage], int]:
        """Usage of each container that answered, and how many did not."""
        results = await asyncio.gather(*(self._one(i) for i in container_ids))
        usage = {i: u for i, u in zip(container_ids, results, strict=True) if u is not None}
        return usage, len(container_ids) - len(usage)

    async def _one(self, container_id: str) -> Usage | None:
        async with self._limit:
            try:
                sample = await self._engine.stats(container_id, timeout=self._timeout)
            except EngineError as exc:
                log.debug("stats of %s: %s", container_id[:12], exc)
                return None
        return usage_from_stats(sample) if sample else None


class AutoStats:
    """``stats.source: auto``: the first poll with containers tries their cgroup files, then keeps to one source."""

    def __init__(self, *, cgroup: CgroupStats, api: StatsSource, chosen: Callable[[str], None]) -> None:
        self._cgroup = cgroup
        self._api = api
        self._chosen = chosen
        self._source: StatsSource | None = None

    async def sample(self, container_ids: list[str]) -> tuple[dict[str, Usage], int]:
        if self._source is not None:
            return await self._source.sample(container_ids)
        if not container_ids:
            return {}, 0
        results = await self._cgroup.read(container_ids)
        readable = sum(isinstance(r, Usage) for r in results.values())
        if choose_source(requested="auto", layout_problem=None, probed=len(results), readable=readable) == "cgroup":
            log.info("stats: the containers' cgroup files read; using them")
            self._source = self._cgroup
            self._chosen("cgroup")
            return self._cgroup.report(results)
        first = next(iter(results.values()))
        log.info("stats: the containers' cgroup files cannot be read (%s); using the Docker stats API", first)
        self._source = self._api
        self._chosen("api")
        return await self._api.sample(container_ids)


def _cgroup_parent(engine: Engine, *, concurrency: int) -> Callable[[str], Awaitable[str | None]]:
    """Looks up a container's HostConfig.CgroupParent by inspect, a few at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def cgroup_parent(container_id: str) -> str | None:
        async with limit:
            try:
                data = await engine.inspect(container_id)
            except EngineError as exc:
                log.debug("inspect of %s for its cgroup parent: %s", container_id[:12], exc)
                return None
        if data is None:
            return None  # gone
        parent = (data.get("HostConfig") or {}).get("CgroupParent")
        return parent if isinstance(parent, str) else None

    return cgroup_parent


async def open_source(
    *, settings: Settings, engine: Engine, api: StatsSource, chosen: Callable[[str], None]
) -> StatsSource | None:
    """The source ``stats.source`` asks for; None while the daemon does not answer /info (try again later)."""
    requested = settings.stats.source
    if requested == "api":
        chosen("api")
        return api
    try:
        info = await engine.info()
    except EngineError as exc:
        log.debug("stats: /info for the cgroup layout: %s", exc)
        return None
    hierarchy = detect_hierarchy(
        root=settings.stats.cgroup_root,
        driver=str(info.get("CgroupDriver") or ""),
        version=str(info.get("CgroupVersion") or ""),
    )
    problem = layout_problem(hierarchy)
    log.info(
        "stats: the daemon's cgroups are v%d (%s driver); cgroup tree at %s",
        hierarchy.version,
        hierarchy.driver,
        hierarchy.root or "/",
    )
    cgroup = CgroupStats(
        hierarchy=hierarchy,
        cgroup_parent=_cgroup_parent(engine, concurrency=settings.stats.concurrency),
    )
    choice = choose_source(requested=requested, layout_problem=problem, probed=0, readable=0)
    if choice == "cgroup":
        if problem:
            log.warning("stats.source is cgroup, but %s: set stats.cgroup_root to the host's cgroup tree", problem)
        chosen("cgroup")
        return cgroup
    if choice == "api":
        log.info("stats: %s; using the Docker stats API", problem)
        chosen("api")
        return api
    return AutoStats(cgroup=cgroup, api=api, chosen=chosen)


@dataclass
class StatsPoll(Source):
    """Every interval, sample the running tracked containers and report their usage (with
    ``stats.enabled`` off: nothing at all)."""

    settings: Settings
    snapshot: Callable[[], State]
    submit: Callable[[UsageSampled], None]
    metrics: SelfMetrics
    clock: Callable[[], float] = time.time
    name: ClassVar[str] = "stats poll"
    _connection: Reconnect = field(init=False)

    def __post_init__(self) -> None:
        # Its failures are the Docker watch's to report; a container that cannot be read is counted.
        self._connection = Reconnect(self.settings.docker, log, prefix="stats: ", speaks=False)

    @classmethod
    def given(cls, given: Given) -> StatsPoll:
        return cls(settings=given.settings, snapshot=given.snapshot, submit=given.submit, metrics=given.metrics)

    async def run_forever(self) -> NoReturn:
        if not self.settings.stats.enabled:
            await asyncio.Event().wait()  # never set: no requests at all
        await self._connection.forever(self._session)

    async def _session(self) -> NoReturn:
        async with Engine.open(self.settings.docker) as engine:
            self._connection.synced()  # nothing to resync: each poll reads what runs now
            await self._poll(engine)

    async def _poll(self, engine: Engine) -> NoReturn:
        interval = self.settings.stats.interval_seconds
        # One API sample takes about a second (the daemon waits for a second reading).
        timeout = max(interval, self.settings.docker.request_timeout_seconds)
        api = ApiStats(engine, concurrency=self.settings.stats.concurrency, timeout=timeout)
        source: StatsSource | None = None
        last_errors = 0
        while True:
            started = time.monotonic()
            ids = self.snapshot().running_instance_ids()
            if source is None:
                source = await open_source(
                    settings=self.settings, engine=engine, api=api, chosen=self.metrics.stats_source_in_use
                )
            usage, errors = await source.sample(ids) if source else ({}, len(ids))
            if usage:
                self.submit(UsageSampled(self.clock(), usage))
            elapsed = time.monotonic() - started
            self.metrics.stats_duration.observe(elapsed)
            self.metrics.stats_errors.inc(errors)
            if errors != last_errors:  # a line when it changes, not one every poll
                log.info("stats poll: %d of %d containers could not be read", errors, len(ids))
                last_errors = errors
            await asyncio.sleep(max(0.0, interval - elapsed))
