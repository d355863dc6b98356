"""The Docker Engine client every Docker source shares: the configured host, the request timeout,
and one answer to "the engine failed": ``EngineError``, of a kind (``selfmetrics.EngineErrorKind``).

Each source opens its own (``Engine.open``), for as long as it needs: the Docker watch one per
session, reconnecting after a failure; the stats poll one for good. Every request goes through
here, and whatever the engine does wrong comes out as an ``EngineError``: a missing socket
(aiodocker asserts when it finds none), a refused or dropped connection, a request that does
not answer in time, an HTTP error, an answer that is not what Docker sends (aiodocker and aiohttp
then raise errors of any type: ``KeyError``, ``UnicodeDecodeError``, ``ContentTypeError``...),
an event line that is not a JSON object or longer than ``MAX_EVENT_BYTES``. Anything else
raised by a source is a bug in the watcher.

The event stream is read here, not by aiodocker: aiohttp's ``readline`` gives up on a line over
512 KiB, and Docker's event lines carry every label of the container and the whole command of a
``docker exec``, of any container.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import Any

import aiodocker
import aiohttp
from yarl import URL

from watcher.config import DockerSettings
from watcher.selfmetrics import EngineErrorKind
from watcher.sources import jsonfields

# Longest event line read (Docker's are kilobytes, but labels and exec commands have no limit);
# past it the event is lost, and the source resyncs.
MAX_EVENT_BYTES = 16 * 1024 * 1024
# Lines longer than this are parsed in a thread: the loop must not stall while the daemon
# writes (it drops the events of a reader that stalls for about 100 ms).
_PARSE_IN_THREAD_BYTES = 1024 * 1024
_DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineError(Exception):
    """The Docker Engine failed; ``kind`` is what of, ``reason`` says how."""

    def __init__(self, kind: EngineErrorKind, reason: str, *, status: int = 0) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.status = status  # the HTTP status of an HTTP_ERROR (a refusal is told apart by it: 403)


class Engine:
    """One connection to the Docker Engine, each request bounded by ``docker.request_timeout_seconds``."""

    def __init__(self, docker: aiodocker.Docker, *, timeout: float, host: str = "") -> None:
        self.docker = docker
        self.timeout = timeout
        self.host = host or os.environ.get("DOCKER_HOST", "") or f"unix://{_DEFAULT_SOCKET}"

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: DockerSettings) -> AsyncIterator[Engine]:
        """A connection to ``docker.host`` (empty: DOCKER_HOST, else the local socket), closed on exit."""
        try:
            docker = aiodocker.Docker(url=settings.host or None)
        except Exception as exc:  # aiodocker asserts when it finds no socket (and DOCKER_HOST is not set)
            if settings.host or os.environ.get("DOCKER_HOST"):
                raise EngineError(
                    EngineErrorKind.PROTOCOL, f"cannot use {settings.host or os.environ['DOCKER_HOST']}: {exc}"
                ) from exc
            raise EngineError(
                EngineErrorKind.NO_SOCKET, f"no Docker socket at {_DEFAULT_SOCKET}, and DOCKER_HOST is not set"
            ) from exc
        async with docker:
            yield cls(docker, timeout=settings.request_timeout_seconds, host=settings.host)

    def deadline(self) -> asyncio.Timeout:
        """The bound of one request."""
        return asyncio.timeout(self.timeout)

    async def info(self) -> Mapping[str, Any]:
        """``/info``: the daemon's clock, its cgroup driver and version."""
        with self._failures("/info"):
            async with self.deadline():
                info = await self.docker.system.info()
        return _mapping(info, "/info")

    async def daemon_time(self) -> float | None:
        """The daemon's clock (``/info``): event times and resyncs must be on one timeline."""
        return jsonfields.time((await self.info()).get("SystemTime"))

    async def get(self, path: str, **params: str) -> Mapping[str, Any]:
        """``GET /path``: a JSON object (what the typed calls above do not ask: Swarm's nodes, version)."""
        return _mapping(await self._json(path, params), path)

    async def listed(self, path: str, **params: str) -> list[Mapping[str, Any]]:
        """``GET /path``: a JSON list of objects (Swarm's services, tasks)."""
        found = await self._json(path, params)
        if not isinstance(found, list) or not all(isinstance(item, Mapping) for item in found):
            raise EngineError(
                EngineErrorKind.PROTOCOL, f"{path} answered {type(found).__name__}, not a list of JSON objects"
            )
        return found

    async def post(self, path: str, body: Mapping[str, Any], **params: str) -> Mapping[str, Any]:
        """``POST /path`` of a JSON body, answered with a JSON object: the one write, Swarm's rollback."""
        return _mapping(await self._json(path, params, body=body), path)

    async def _json(self, path: str, params: Mapping[str, str], *, body: Mapping[str, Any] | None = None) -> object:
        """The one request for JSON answers (a POST when it has a ``body``), through aiodocker's public
        session (unversioned: the daemon's own API version, as for ``/events``)."""
        url = URL(f"{self.docker.docker_host}/{path}")
        method = "GET" if body is None else "POST"
        with self._failures(path):
            async with self.deadline(), self.docker.session.request(method, url, params=params, json=body) as response:
                if response.status != 200:
                    said = await response.text(errors="replace")
                    raise EngineError(
                        EngineErrorKind.HTTP_ERROR, f"{path}: HTTP {response.status}: {said[:200].strip()}",
                        status=response.status,
                    )  # fmt: skip
                found: object = await response.json(content_type=None)
        return found

    async def inspect(self, container_id: str) -> Mapping[str, Any] | None:
        """A container's inspect; None when there is no such container (any more)."""
        try:
            with self._failures("an inspect"):
                async with self.deadline():
                    data = await self.docker.containers.container(container_id).show()
        except EngineError as error:
            cause = error.__cause__
            if isinstance(cause, aiodocker.DockerError) and gone(cause.status, cause.message):
                return None
            raise
        inspected = _mapping(data, "an inspect")
        answered = inspected.get("Id")
        if not isinstance(answered, str) or not answered.startswith(container_id):
            raise EngineError(
                EngineErrorKind.PROTOCOL, f"an inspect of {container_id[:12]} answered for another container"
            )
        return inspected

    async def labels(self, filters: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        """The labels of every container, running or not, that ``filters`` let through, by id."""
        with self._failures("the container list"):
            async with self.deadline():
                listed = await self.docker.containers.list(all=True, filters=json.dumps(filters))
            found = {c.id: c["Labels"] or {} for c in listed}
        if not all(isinstance(i, str) and isinstance(labels, Mapping) for i, labels in found.items()):
            raise EngineError(EngineErrorKind.PROTOCOL, "the container list is not one of containers")
        return found

    async def stats(self, container_id: str, *, timeout: float) -> Mapping[str, Any] | None:
        """One stats sample of a container (the daemon takes a second); None when it has none."""
        with self._failures("a stats request"):
            async with asyncio.timeout(timeout):
                samples = await self.docker.containers.container(container_id).stats(stream=False)
        if not isinstance(samples, list):
            raise EngineError(EngineErrorKind.PROTOCOL, "a stats request answered something else than samples")
        return _mapping(samples[0], "a stats request") if samples else None

    async def events(
        self, *, since: float, until: float | None = None, filters: Mapping[str, Any], opened: Callable[[], None]
    ) -> AsyncGenerator[Mapping[str, Any], None]:
        """The events from ``since`` (up to ``until``, else live, for as long as the daemon sends):
        ``opened()`` once the daemon answered, then each event. Ends when the daemon ends the stream."""
        params = {"since": f"{since:.9f}", "filters": json.dumps(filters)}
        if until is not None:
            params["until"] = f"{until:.9f}"
        url = URL(f"{self.docker.docker_host}/events")
        forever = aiohttp.ClientTimeout(total=None, sock_read=None, connect=self.timeout)
        with self._failures("the event stream"):
            async with self.deadline():
                response = await self.docker.session.get(url, params=params, timeout=forever)
        try:
            if response.status != 200:
                with self._failures("the event stream"):
                    body = await response.text(errors="replace")
                raise EngineError(
                    EngineErrorKind.HTTP_ERROR, f"the event stream: HTTP {response.status}: {body[:200].strip()}"
                )
            opened()
            async with aclosing(_lines(response.content)) as lines:
                while True:
                    with self._failures("the event stream"):
                        line = await anext(lines, None)
                    if line is None:
                        return
                    yield await _event(line)
        finally:
            response.close()

    async def events_between(
        self, *, since: float, until: float, filters: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        """The events the daemon lists from ``since`` to ``until``, within one request's bound."""
        listing = self.events(since=since, until=until, filters=filters, opened=_nothing)
        with self._failures("the events listed"):
            async with self.deadline(), aclosing(listing) as listed:
                return [event async for event in listed]

    @contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """What the client raises for ``what``, as an EngineError."""
        try:
            yield
        except EngineError:
            raise
        except Exception as exc:
            raise _as_engine_error(exc, what=what, host=self.host) from exc


async def _lines(content: aiohttp.StreamReader) -> AsyncGenerator[bytes, None]:
    """Newline-ended lines of any length up to MAX_EVENT_BYTES (aiohttp's readline stops at 512 KiB)."""
    buffer = bytearray()
    while chunk := await content.readany():
        scanned = len(buffer)  # the bytes before the chunk hold no newline
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", max(start, scanned))) >= 0:
            line = bytes(buffer[start:end])
            start = end + 1
            if line.strip():
                yield line
        del buffer[:start]
        if len(buffer) > MAX_EVENT_BYTES:
            raise EngineError(EngineErrorKind.OVERSIZED_EVENT, f"an event line longer than {MAX_EVENT_BYTES} bytes")
    if buffer.strip():
        raise EngineError(EngineErrorKind.CONNECTION, "the event stream ended in the middle of an event")


async def _event(line: bytes) -> Mapping[str, Any]:
    try:
        if len(line) > _PARSE_IN_THREAD_BYTES:
            event = await asyncio.to_thread(json.loads, line)
        else:
            event = json.loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise EngineError(
            EngineErrorKind.INVALID_EVENT, f"an event line that is not JSON ({exc!s:.200}): {line[:80]!r}"
        ) from exc
    if not isinstance(event, dict):
        raise EngineError(EngineErrorKind.INVALID_EVENT, f"an event line that is not a JSON object: {line[:80]!r}")
    return event


def gone(status: int, message: str) -> bool:
    """An error answer to an inspect that says the container no longer exists: Docker's 404,
    or the 500 "... no such container" of Podman 4.3 (a removal racing the inspect)."""
    return status == 404 or (status == 500 and "no such container" in message.lower())


def _nothing() -> None:
    pass


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EngineError(EngineErrorKind.PROTOCOL, f"{what} answered {type(value).__name__}, not a JSON object")
    return value


def _as_engine_error(exc: Exception, *, what: str, host: str) -> EngineError:
    if isinstance(exc, TimeoutError):
        return EngineError(EngineErrorKind.TIMEOUT, f"{what} did not answer in time")
    causes = list(_chain(exc))
    missing = next((e for e in causes if isinstance(e, FileNotFoundError)), None)
    if missing is not None and host.startswith("unix://"):
        return EngineError(
            EngineErrorKind.NO_SOCKET, f"no Docker socket at {host.removeprefix('unix://')} ({missing.strerror})"
        )
    if isinstance(exc, aiodocker.DockerError) and exc.status != 900:  # 900: aiodocker's "cannot connect"
        return EngineError(EngineErrorKind.HTTP_ERROR, f"{what}: HTTP {exc.status}: {exc.message!s:.200}")
    connection = (aiodocker.DockerError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)
    if isinstance(exc, connection):
        return EngineError(EngineErrorKind.CONNECTION, f"{what}: {exc!s:.300}")
    return EngineError(EngineErrorKind.PROTOCOL, f"{what}: {type(exc).__name__}: {exc!s:.200}")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception and those it was raised from or while handling (aiohttp wraps the OSError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            yield exc.os_error
        exc = exc.__cause__ or exc.__context__
