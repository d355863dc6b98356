"""The Docker Engine client every Docker source shares: the configured host, the request timeout,
and one answer to "the engine failed".

Each source opens its own (``Engine.open``), for as long as it needs: the Docker watch one per
session, reconnecting after a failure; the stats poll one for good. What only one source reads
(the event stream, stats samples) it reads through ``Engine.docker``; the requests they share
are here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiodocker
import aiohttp

from watcher.config import DockerSettings

# What an engine that is away, restarting or misbehaving raises: a source retries or skips on
# these; anything else is a bug and stops the service.
ENGINE_ERRORS = (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError, json.JSONDecodeError)


class Engine:
    """One connection to the Docker Engine, each request bounded by ``docker.request_timeout_seconds``."""

    def __init__(self, docker: aiodocker.Docker, *, timeout: float) -> None:
        self.docker = docker
        self.timeout = timeout

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: DockerSettings) -> AsyncIterator[Engine]:
        """A connection to ``docker.host`` (empty: DOCKER_HOST, else the local socket), closed on exit."""
        async with aiodocker.Docker(url=settings.host or None) as docker:
            yield cls(docker, timeout=settings.request_timeout_seconds)

    def deadline(self) -> asyncio.Timeout:
        """The bound of one request, for those made through ``docker``."""
        return asyncio.timeout(self.timeout)

    async def info(self) -> Mapping[str, Any]:
        """``/info``: the daemon's clock, its cgroup driver and version."""
        async with self.deadline():
            info: Mapping[str, Any] = await self.docker.system.info()
        return info

    async def inspect(self, container_id: str) -> Mapping[str, Any] | None:
        """A container's inspect; None when there is no such container (any more)."""
        try:
            async with self.deadline():
                data: Mapping[str, Any] = await self.docker.containers.container(container_id).show()
        except aiodocker.DockerError as exc:
            if gone(exc.status, exc.message):
                return None
            raise
        return data


def gone(status: int, message: str) -> bool:
    """An error answer to an inspect that says the container no longer exists: Docker's 404,
    or the 500 "... no such container" of Podman 4.3 (a removal racing the inspect)."""
    return status == 404 or (status == 500 and "no such container" in message.lower())
