"""Proxies in front of a Docker socket that tests control, each on its own event loop thread.

``SocketProxy`` forwards bytes and can cut the daemon off (connections closed, socket file
gone) or hang it (connections held open, nothing forwarded). ``ReadOnlyProxy`` speaks HTTP:
it forwards GET and HEAD, refuses everything else with 403, records every request, can
stall the responses in flight (the event stream) while new requests still pass, and can hold
container inspects (a daemon slow to answer them) while the event stream flows.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

DOCKER_SOCKET = "/var/run/docker.sock"
# Hop-by-hop headers, and those aiohttp sets itself for the body it sends.
_NOT_FORWARDED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"})
_INSPECT = re.compile(r"(/v[0-9.]+)?/containers/[^/]+/json")


class _OnItsOwnLoop:
    """Runs the proxy's coroutines on a private event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class SocketProxy(_OnItsOwnLoop):
    """A unix-socket forwarder to the daemon that a test can cut, restore, freeze and thaw."""

    def __init__(self, path: Path, *, upstream: str = DOCKER_SOCKET) -> None:
        super().__init__()
        self.path = path
        self.upstream = upstream
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()

    def start(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        """Close every connection and remove the socket file: the daemon seems gone."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def freeze(self) -> None:
        """Keep accepting and keep every connection open, but forward nothing: a hung daemon."""
        self._call(self._flow(False))

    def thaw(self) -> None:
        self._call(self._flow(True))

    def close(self) -> None:
        self._call(self._cut())
        self._stop_loop()

    async def _listen(self) -> None:
        self.server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def _flow(self, on: bool) -> None:
        if on:
            self.flowing.set()
        else:
            self.flowing.clear()

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()
        self.path.unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await self.flowing.wait()
                    data = await src.read(65536)
                    if not data:
                        break
                    await self.flowing.wait()  # what was read while frozen waits too
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@dataclass(frozen=True)
class Seen:
    """One request that reached the proxy, and what it answered."""

    method: str
    path: str  # without the query string
    status: int


class ReadOnlyProxy(_OnItsOwnLoop):
    """An HTTP proxy to the daemon that lets only GET and HEAD through, streaming responses."""

    ALLOWED = frozenset({"GET", "HEAD"})

    def __init__(self, path: Path, *, upstream: str = DOCKER_SOCKET) -> None:
        super().__init__()
        self.path = path
        self.upstream = upstream
        self.seen: list[Seen] = []  # appended on the proxy's loop; list.append is atomic
        self._in_flight: set[asyncio.Event] = set()  # one per response being streamed
        self._inspects = asyncio.Event()  # set: inspects pass
        self._inspects.set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._call(self._start())

    def stall_responses_in_flight(self) -> None:
        """Stop forwarding the responses being streamed now; later requests are served normally."""
        self._call(self._stall())

    def hold_inspects(self) -> None:
        """Keep every container inspect waiting until ``release_inspects``."""
        self._call(self._gate(self._inspects, open_=False))

    def release_inspects(self) -> None:
        self._call(self._gate(self._inspects, open_=True))

    def close(self) -> None:
        self._call(self._close())
        self._stop_loop()

    def requests(self) -> list[Seen]:
        return list(self.seen)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.upstream), timeout=aiohttp.ClientTimeout(total=None)
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # Cancelling the handler when the client goes away closes its upstream request too.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()

    @staticmethod
    async def _gate(gate: asyncio.Event, *, open_: bool) -> None:
        gate.set() if open_ else gate.clear()

    async def _stall(self) -> None:
        for flowing in self._in_flight:
            flowing.clear()

    async def _close(self) -> None:
        self._inspects.set()
        for flowing in self._in_flight:
            flowing.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self.path.unlink(missing_ok=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.method not in self.ALLOWED:
            self.seen.append(Seen(request.method, request.path, 403))
            return web.json_response({"message": f"{request.method} refused by the read-only proxy"}, status=403)
        assert self._session is not None
        if _INSPECT.fullmatch(request.path):
            await self._inspects.wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        url = URL(f"http://docker{request.raw_path}", encoded=True)
        async with self._session.request(request.method, url, headers=headers) as upstream:
            self.seen.append(Seen(request.method, request.path, upstream.status))
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_FORWARDED},
            )
            await response.prepare(request)
            flowing = asyncio.Event()
            flowing.set()
            self._in_flight.add(flowing)
            try:
                async for chunk in upstream.content.iter_any():
                    await flowing.wait()
                    await response.write(chunk)
            finally:
                self._in_flight.discard(flowing)
            await response.write_eof()
            return response
