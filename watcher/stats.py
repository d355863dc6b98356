"""CPU and memory of running tracked containers, polled every stats interval."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import aiodocker
import aiohttp

from watcher.config import Settings
from watcher.observations import Usage, UsageSampled
from watcher.selfmetrics import SelfMetrics
from watcher.state import State

log = logging.getLogger(__name__)


def usage_from_stats(stats: Mapping[str, Any]) -> Usage | None:
    """One stats API sample → Usage; memory as `docker stats` computes it (usage minus inactive file)."""
    try:
        cpu_ns = stats["cpu_stats"]["cpu_usage"]["total_usage"]
        memory = stats["memory_stats"]
        usage = float(memory["usage"])
    except (KeyError, TypeError):
        return None  # a container that stopped between listing and sampling
    detail = memory.get("stats") or {}
    # cgroup v1 reports total_inactive_file, v2 inactive_file.
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    working_set = usage - inactive if inactive < usage else usage
    return Usage(cpu_seconds=float(cpu_ns) / 1e9, memory_bytes=working_set)


class ApiStats:
    """Samples through the Docker stats API (about a second per container, so in parallel)."""

    def __init__(self, docker: aiodocker.Docker, *, concurrency: int, timeout: float) -> None:
        self._docker = docker
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def sample(self, container_ids: list[str]) -> tuple[dict[str, Usage], int]:
        """Usage of each container that answered, and how many did not."""
        results = await asyncio.gather(*(self._one(i) for i in container_ids))
        usage = {i: u for i, u in zip(container_ids, results, strict=True) if u is not None}
        return usage, len(container_ids) - len(usage)

    async def _one(self, container_id: str) -> Usage | None:
        async with self._limit:
            try:
                samples = await self._docker.containers.container(container_id).stats(
                    stream=False, timeout=self._timeout
                )
            except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.debug("stats of %s: %s", container_id[:12], exc)
                return None
        return usage_from_stats(samples[0]) if samples else None


async def poll_forever(
    *,
    settings: Settings,
    snapshot: Callable[[], State],
    submit: Callable[[UsageSampled], None],
    metrics: SelfMetrics,
    clock: Callable[[], float] = time.time,
) -> NoReturn:
    """Every interval, sample the running tracked containers and report their usage."""
    interval = settings.stats.interval_seconds
    async with aiodocker.Docker(url=settings.docker.host or None) as docker:
        # One API sample takes about a second (the daemon waits for a second reading).
        timeout = max(interval, settings.docker.request_timeout_seconds)
        source = ApiStats(docker, concurrency=settings.stats.concurrency, timeout=timeout)
        while True:
            started = time.monotonic()
            ids = snapshot().running_instance_ids()
            usage, errors = await source.sample(ids)
            if usage:
                submit(UsageSampled(clock(), usage))
            elapsed = time.monotonic() - started
            metrics.stats_duration.observe(elapsed)
            metrics.stats_errors.inc(errors)
            if errors:
                log.info("stats poll: %d of %d containers did not answer", errors, len(ids))
            await asyncio.sleep(max(0.0, interval - elapsed))
