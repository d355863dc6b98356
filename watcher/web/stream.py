"""``GET /api/v1/events``: the domain's events as Server-Sent Events, to every client at once.

``publish`` (a subscriber of the core, on the event loop) encodes each event once, keeps it
in a bounded buffer and puts it on each client's bounded queue; it never waits. A client
whose queue is full, or whose socket takes no data for WRITE_TIMEOUT_SECONDS, is dropped: its
queue emptied and its connection aborted, so it holds neither memory nor the loop. It may
reconnect with ``Last-Event-ID`` and gets what it missed from the buffer, or, when that is
gone (or the id is from before a restart of the watcher), a ``resync`` event telling it to
read ``/api/v1/deployments`` again.

Event ids are ``<run>.<sequence>``: ``run`` is new with every start of the watcher, so an id
of an earlier run is never taken for one of this run.

Each client holds a connection (a file descriptor) for as long as it likes, so their number is
capped, in all and per client address: beyond, a 503 with ``Retry-After`` and the connection
closed, so that streams can never take the descriptors ``/metrics``, the CI/CD API, the state
file and the Docker connection need.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from watcher.config import WebSettings
from watcher.domain.events import DomainEvent
from watcher.domain.model import DeploymentKey, State
from watcher.domain.settings import RuleSettings
from watcher.selfmetrics import SelfMetrics
from watcher.web import views
from watcher.web.limits import OncePerKind
from watcher.wire import EVENTS_PATH, RESYNC_EVENT

log = logging.getLogger(__name__)

PATH = EVENTS_PATH
BUFFER_EVENTS = 1000  # kept for clients that reconnect with Last-Event-ID
QUEUE_EVENTS = 256  # waiting for one client; a client this far behind is dropped
WRITE_TIMEOUT_SECONDS = 10.0  # a socket that takes no data this long is a client that stopped reading
HEARTBEAT_SECONDS = 15.0  # a comment line, so proxies keep the connection and dead clients are noticed
RETRY_MILLISECONDS = 2000  # how long a browser's EventSource waits before reconnecting
RETRY_AFTER_SECONDS = 10  # a client refused for the caps
GONE_CHECK_SECONDS = 1.0  # how often a quiet stream looks whether its client hung up (aiohttp tells no handler)
_HEARTBEAT = b": keepalive\n\n"
# An id this stream sent: ASCII digits only (str.isdigit also takes "²", which int() refuses), and
# few enough of them that int() never meets its limit on digits.
_EVENT_ID = re.compile(r"([0-9a-f]{1,16})\.([0-9]{1,18})")


@dataclass(frozen=True, slots=True)
class Frame:
    sequence: int
    key: DeploymentKey
    data: bytes  # the whole SSE frame, encoded once for every client


@dataclass(eq=False, slots=True)
class _Client:
    queue: asyncio.Queue[Frame | None]
    environment: str | None
    name: str | None
    transport: asyncio.Transport | None
    address: str
    dropped: bool = field(default=False)

    def wants(self, frame: Frame) -> bool:
        return (self.environment is None or frame.key.environment == self.environment) and (
            self.name is None or frame.key.name == self.name
        )


class EventStream:
    """The stream's buffer and clients; ``publish`` is the core's subscriber, ``handle`` the route."""

    def __init__(
        self,
        *,
        snapshot: Callable[[], State],
        settings: RuleSettings,
        metrics: SelfMetrics,
        buffer_events: int = BUFFER_EVENTS,
        queue_events: int = QUEUE_EVENTS,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
        max_clients: int = WebSettings.max_stream_clients,
        max_clients_per_address: int = WebSettings.max_stream_clients_per_address,
    ) -> None:
        self._snapshot = snapshot
        self._settings = settings
        self._metrics = metrics
        self._buffer: collections.deque[Frame] = collections.deque(maxlen=buffer_events)
        self._queue_events = queue_events
        self._write_timeout = write_timeout
        self._heartbeat = heartbeat
        self._clients: set[_Client] = set()
        self._max_clients = max_clients
        self._max_per_address = max_clients_per_address
        self._per_address: collections.Counter[str] = collections.Counter()
        self._refusals = OncePerKind(log, logging.WARNING)
        self._sequence = 0
        self._closed = False
        self.run = secrets.token_hex(4)

    @property
    def last_id(self) -> str:
        """The id of the newest event (``<run>.0`` before the first)."""
        return f"{self.run}.{self._sequence}"

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, event: DomainEvent) -> None:
        """Hand ``event`` to every client (a ``Subscriber``); the state after its step is in place."""
        named = views.event_view(event)
        if named is None:
            return
        name, payload = named
        deployment = self._snapshot().deployments.get(event.key)
        # The deployment as it is after the step that made the event: a board updates its row from it.
        payload["deployment"] = None if deployment is None else views.summary(deployment, settings=self._settings)
        self._sequence += 1
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        frame = Frame(self._sequence, event.key, f"id: {self.last_id}\nevent: {name}\ndata: {data}\n\n".encode())
        self._buffer.append(frame)
        for client in list(self._clients):
            if not client.wants(frame):
                continue
            try:
                client.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._drop(client, "its queue of events is full")

    def missed(self, last_event_id: str) -> list[Frame] | None:
        """The frames after ``last_event_id``; None when they are no longer all there (or the id is not ours).
        Never raises: the id is whatever a client sent."""
        match = _EVENT_ID.fullmatch(last_event_id.strip())
        if match is None or match[1] != self.run or int(match[2]) > self._sequence:
            return None
        after = int(match[2])
        oldest = self._buffer[0].sequence if self._buffer else self._sequence + 1
        if after < oldest - 1:
            return None  # some fell out of the buffer
        return [frame for frame in self._buffer if frame.sequence > after]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The stream for one client: what it missed (or ``resync``), then every event as it happens."""
        address = request.remote or ""
        refused = self._refusal(address)
        if refused is not None:
            return refused
        since = request.headers.get("Last-Event-ID") or request.query.get("last_event_id", "")
        client = _Client(
            queue=asyncio.Queue(maxsize=self._queue_events),
            environment=request.query.get("environment"),
            name=request.query.get("name"),
            transport=request.transport,
            address=address,
        )
        # No await between reading the buffer and joining: no event falls in between.
        backlog = self.missed(since) if since else []
        self._join(client)
        response = web.StreamResponse(
            headers={
                hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
                hdrs.CACHE_CONTROL: "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            }
        )
        try:
            await response.prepare(request)
            await self._write(response, f"retry: {RETRY_MILLISECONDS}\n\n".encode())
            if backlog is None:
                resync = json.dumps({"event": RESYNC_EVENT, "reason": "events since Last-Event-ID are no longer kept"})
                await self._write(response, f"id: {self.last_id}\nevent: {RESYNC_EVENT}\ndata: {resync}\n\n".encode())
            else:
                for frame in backlog:
                    if client.wants(frame):
                        await self._write(response, frame.data)
            quiet = 0.0  # seconds since the last write
            while not self._closed:
                wait = min(self._heartbeat, GONE_CHECK_SECONDS)
                try:
                    async with asyncio.timeout(wait):
                        queued = await client.queue.get()
                except TimeoutError:
                    if request.transport is None:
                        break  # the client hung up: its place under the caps is free now, not at the next write
                    quiet += wait
                    if quiet >= self._heartbeat:
                        await self._write(response, _HEARTBEAT)
                        quiet = 0.0
                    continue
                quiet = 0.0
                if queued is None:
                    break  # dropped, or the watcher stops
                await self._write(response, queued.data)
        except TimeoutError:
            self._drop(client, f"it took no data for {self._write_timeout:g} s")
        except ConnectionError:
            pass  # the client went away (aiohttp raises ClientConnectionResetError, a ConnectionResetError)
        finally:
            self._leave(client)
        return response

    def _refusal(self, address: str) -> web.Response | None:
        """A 503 when the caps are reached (the connection closed after it), else None."""
        if len(self._clients) >= self._max_clients:
            limit, why = "total", f"{self._max_clients} clients in all (web.max_stream_clients)"
        elif self._per_address[address] >= self._max_per_address:
            limit, why = "address", (f"{self._max_per_address} clients from {address or 'one address'} "
                                     "(web.max_stream_clients_per_address)")  # fmt: skip
        else:
            return None
        self._metrics.stream_refused.labels(limit).inc()
        self._refusals.log(limit, "refused an event stream client: the stream has %s", why)
        body = json.dumps({"error": f"too many event stream clients: {why}; retry later"})
        response = web.Response(
            status=503, text=body, content_type="application/json",
            headers={hdrs.RETRY_AFTER: str(RETRY_AFTER_SECONDS)},
        )  # fmt: skip
        response.force_close()  # a refused client keeps no descriptor either
        return response

    def _join(self, client: _Client) -> None:
        self._clients.add(client)
        self._per_address[client.address] += 1
        self._metrics.stream_clients.set(len(self._clients))

    def _leave(self, client: _Client) -> None:
        """Once per client, whichever comes first: dropped, or its handler ends."""
        if client not in self._clients:
            return
        self._clients.remove(client)
        self._per_address[client.address] -= 1
        if not self._per_address[client.address]:
            del self._per_address[client.address]
        self._metrics.stream_clients.set(len(self._clients))

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(self._write_timeout):
            await response.write(data)

    def _drop(self, client: _Client, why: str) -> None:
        if client.dropped:
            return
        client.dropped = True
        self._leave(client)
        self._metrics.stream_dropped.inc()
        log.info("dropped an event stream client: %s", why)
        _end(client)
        if client.transport is not None:
            client.transport.abort()  # what it did not read is freed now, not when it reads

    async def close(self, app: web.Application | None = None) -> None:
        """End every stream (the watcher stops): clients reconnect to the next run."""
        self._closed = True
        for client in list(self._clients):
            _end(client)


def _end(client: _Client) -> None:
    """Empty the client's queue and wake its handler with the end marker."""
    while not client.queue.empty():
        client.queue.get_nowait()
    with contextlib.suppress(asyncio.QueueFull):
        client.queue.put_nowait(None)
