"""``GET /api/v1/events``: the domain's events as Server-Sent Events, to every client at once.

``publish`` (a subscriber of the core, on the event loop) encodes each event once, as an SSE
frame and as the HTTP/1.1 chunk that carries it, keeps it in a bounded buffer and writes those
same bytes to the transport of every client that wants it; it never waits. Clients are grouped
by their filter (``environment``, ``name``, either or none), so an event reaches its four
groups by four dictionary lookups and each client costs one ``transport.write`` of shared
bytes: no task woken, no queue, no copy per client (1,000 clients: ``python -m
tests.benchmark scale``). A client's handler only waits for its end; one task for all of them
sends the heartbeats and looks at every socket each GONE_CHECK_SECONDS, a slice of clients at a
time: a task per client, each woken every second, cost the loop a burst of a thousand wake-ups,
and an event that came during one waited for it.

A client with more than ``queue_events`` frames waiting in its transport's buffer (written
while the buffer was not empty: the kernel's socket buffer is full, the client reads slower
than events come), or whose buffer has not emptied for WRITE_TIMEOUT_SECONDS, is dropped: its
connection aborted, so it holds neither memory nor the loop. It may reconnect with
``Last-Event-ID`` and gets what it missed from the buffer, or, when that is gone (or the id is
from before a restart of the watcher), a ``resync`` event telling it to read
``/api/v1/deployments`` again.

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
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import HttpVersion11, hdrs, web

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
SWEEP_SLICE = 100  # clients looked at between two turns of the event loop
_HEARTBEAT = b": keepalive\n\n"
# An id this stream sent: ASCII digits only (str.isdigit also takes "²", which int() refuses), and
# few enough of them that int() never meets its limit on digits.
_EVENT_ID = re.compile(r"([0-9a-f]{1,16})\.([0-9]{1,18})")


Filter = tuple[str | None, str | None]  # a client's environment and name; None: any


def _chunk(data: bytes) -> bytes:
    """``data`` as one chunk of HTTP/1.1 chunked transfer coding, as aiohttp frames a streamed body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass(frozen=True, slots=True)
class Frame:
    sequence: int
    key: DeploymentKey
    data: bytes  # the whole SSE frame, encoded once for every client
    chunk: bytes  # the same as an HTTP/1.1 chunk, encoded once too

    @classmethod
    def of(cls, sequence: int, key: DeploymentKey, data: bytes) -> Frame:
        return cls(sequence, key, data, _chunk(data))


@dataclass(eq=False, slots=True)
class _Client:
    environment: str | None
    name: str | None
    address: str
    done: asyncio.Event = field(default_factory=asyncio.Event)  # dropped, or the watcher stops
    transport: asyncio.Transport | None = None  # set once its response is prepared and it joins its group
    chunked: bool = True
    waiting: int = 0  # frames written while its transport's buffer was not empty, since it last was
    dropped: bool = False
    heartbeat_at: float = 0.0  # the loop's time its next heartbeat is due
    stuck_since: float | None = None  # when its buffer was last seen not empty after being empty

    @property
    def filter(self) -> Filter:
        return (self.environment, self.name)

    def wants(self, frame: Frame) -> bool:
        return (self.environment is None or frame.key.environment == self.environment) and (
            self.name is None or frame.key.name == self.name
        )

    def send(self, frame: Frame) -> None:
        assert self.transport is not None
        self.transport.write(frame.chunk if self.chunked else frame.data)


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
        self._clients: set[_Client] = set()  # every client under the caps, from its first byte to its end
        self._groups: dict[Filter, dict[_Client, None]] = {}  # the clients that take events, by filter
        self._max_clients = max_clients
        self._max_per_address = max_clients_per_address
        self._per_address: collections.Counter[str] = collections.Counter()
        self._refusals = OncePerKind(log, logging.WARNING)
        self._sequence = 0
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None  # looks at every client; runs while there are some
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
        frame = Frame.of(self._sequence, event.key, f"id: {self.last_id}\nevent: {name}\ndata: {data}\n\n".encode())
        self._buffer.append(frame)
        environment, named_as = event.key.environment, event.key.name
        for wanted in ((None, None), (environment, None), (None, named_as), (environment, named_as)):
            group = self._groups.get(wanted)
            if group:
                self._fan_out(frame, group)

    def _fan_out(self, frame: Frame, group: dict[_Client, None]) -> None:
        """``frame`` to every client of ``group``: one write of the same bytes each, then a look at its buffer."""
        limit = self._queue_events
        for client in tuple(group):  # a drop leaves the group
            transport = client.transport
            assert transport is not None
            if transport.is_closing():
                continue  # it hung up: its handler notices within GONE_CHECK_SECONDS and it leaves
            transport.write(frame.chunk if client.chunked else frame.data)
            if not transport.get_write_buffer_size():
                client.waiting = 0
            elif (waiting := client.waiting + 1) > limit:
                self._drop(client, "its queue of events is full")
            else:
                client.waiting = waiting

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
        client = _Client(environment=request.query.get("environment"), name=request.query.get("name"), address=address)
        self._join(client)  # counted under the caps from now on
        response = web.StreamResponse(
            headers={
                hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
                hdrs.CACHE_CONTROL: "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            }
        )
        try:
            await response.prepare(request)  # no Content-Length: aiohttp chunks an HTTP/1.1 body
            transport = request.transport
            if transport is None or client.done.is_set() or self._closed:
                return response
            # No await from reading the buffer to joining the group: no event falls in between.
            client.transport, client.chunked = transport, request.version >= HttpVersion11
            self._start(client, self.missed(since) if since else [])
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.create_task(self._sweep_forever(), name="event stream sweep")
            await client.done.wait()  # dropped, hung up (the sweep sees it), or the watcher stops
        except ConnectionError:
            pass  # the client went away (aiohttp raises ClientConnectionResetError, a ConnectionResetError)
        finally:
            self._leave(client)
        return response

    def _start(self, client: _Client, backlog: list[Frame] | None) -> None:
        """The stream's first bytes (its retry, then what it missed or ``resync``), and the client joins its group."""
        client.send(Frame.of(0, DeploymentKey("", ""), f"retry: {RETRY_MILLISECONDS}\n\n".encode()))
        if backlog is None:
            resync = json.dumps({"event": RESYNC_EVENT, "reason": "events since Last-Event-ID are no longer kept"})
            data = f"id: {self.last_id}\nevent: {RESYNC_EVENT}\ndata: {resync}\n\n".encode()
            client.send(Frame.of(0, DeploymentKey("", ""), data))
        else:
            for frame in backlog:
                if client.wants(frame):
                    client.send(frame)
        client.heartbeat_at = asyncio.get_running_loop().time() + self._heartbeat
        self._groups.setdefault(client.filter, {})[client] = None

    async def _sweep_forever(self) -> None:
        """While there are clients: every GONE_CHECK_SECONDS (or heartbeat period, if shorter), a look at
        each, SWEEP_SLICE at a time with a turn of the loop between, so events are not held up behind it."""
        loop = asyncio.get_running_loop()
        while self._clients and not self._closed:
            await asyncio.sleep(min(self._heartbeat, GONE_CHECK_SECONDS))
            for n, client in enumerate(tuple(self._clients)):
                if n and not n % SWEEP_SLICE:
                    await asyncio.sleep(0)
                self._look(client, loop.time())

    def _look(self, client: _Client, now: float) -> None:
        """End a client that hung up or takes no data; send it a heartbeat when due."""
        transport = client.transport
        if transport is None or client.done.is_set():
            return  # not streaming yet, or ending
        if transport.is_closing():
            client.done.set()  # it hung up: its handler ends, and its place under the caps is free
            return
        if not transport.get_write_buffer_size():
            client.stuck_since = None
        elif client.stuck_since is None:
            client.stuck_since = now
        elif now - client.stuck_since >= self._write_timeout:
            self._drop(client, f"it took no data for {self._write_timeout:g} s")
            return
        if now >= client.heartbeat_at:
            client.send(_HEARTBEAT_FRAME)
            client.heartbeat_at = now + self._heartbeat

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
        group = self._groups.get(client.filter)
        if group is not None:
            group.pop(client, None)
            if not group:
                del self._groups[client.filter]
        self._per_address[client.address] -= 1
        if not self._per_address[client.address]:
            del self._per_address[client.address]
        self._metrics.stream_clients.set(len(self._clients))

    def _drop(self, client: _Client, why: str) -> None:
        if client.dropped:
            return
        client.dropped = True
        self._leave(client)
        self._metrics.stream_dropped.inc()
        log.info("dropped an event stream client: %s", why)
        client.done.set()
        if client.transport is not None:
            client.transport.abort()  # what it did not read is freed now, not when it reads

    async def close(self, app: web.Application | None = None) -> None:
        """End every stream (the watcher stops): clients reconnect to the next run."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for client in list(self._clients):
            client.done.set()


_HEARTBEAT_FRAME = Frame.of(0, DeploymentKey("", ""), _HEARTBEAT)
