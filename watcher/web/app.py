"""The HTTP face: ``/`` (the board, or a landing page without one), ``/metrics``, ``/health``, ``/ready``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from aiohttp import hdrs, web

from watcher.exposition.rendering import Exposition
from watcher.web.board import Board

# /metrics bodies (megabytes at 5,000 deployments) go out a slice at a time, each once the one
# before has left the process: a client that does not read holds a slice and the transport's
# buffer, not a copy of the body (the transport copies what the socket does not take, and a
# body in one write is joined with its headers). 200 pipelining clients that never read cost a
# copy each, 150 MB, before.
WRITE_SLICE = 16 * 1024
# A client that takes no slice for this long is not reading: the connection is dropped, and what
# it held freed. Prometheus gives up on a scrape long before (scrape_timeout, 10 s by default).
STALL_SECONDS = 60.0

LANDING = """<!doctype html>
<html><head><title>deployment-watcher</title></head>
<body><h1>deployment-watcher</h1>
<p>Docker deployments as Prometheus metrics.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="health">/health</a></li>
<li><a href="ready">/ready</a></li></ul></body></html>
"""


def make_app(
    *,
    exposition: Exposition,
    ready: Callable[[], bool],
    why_not: Callable[[], str] = lambda: "",
    board: Board | None = None,
) -> web.Application:
    """An aiohttp application serving ``exposition``; ``ready()`` says whether every source is
    synced, ``why_not()`` why not (their last failures). With ``board``, ``/`` is the board (which
    links the same pages), else a plain landing page."""

    async def landing(request: web.Request) -> web.Response:
        return web.Response(text=LANDING, content_type="text/html")

    async def metrics(request: web.Request) -> web.StreamResponse:
        page = await exposition.page(
            accept=",".join(request.headers.getall(hdrs.ACCEPT, [])),
            accept_encoding=",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, [])),
        )
        if len(page.body) <= WRITE_SLICE or request.method == hdrs.METH_HEAD:
            return web.Response(body=page.body, headers=page.headers)
        return await _sliced(request, page.body, page.headers)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readiness(request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {why_not() or 'not connected to the Docker Engine'}\n")

    app = web.Application()
    if board is None:
        app.router.add_get("/", landing)
    else:
        app.add_routes(board.routes())
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", readiness)
    return app


async def _sliced(request: web.Request, body: bytes, headers: Mapping[str, str]) -> web.StreamResponse:
    """``body`` written a slice at a time, each once the transport's buffer is below a slice."""
    response = web.StreamResponse(headers=headers)
    response.content_length = len(body)
    if request.transport is not None:
        request.transport.set_write_buffer_limits(high=WRITE_SLICE)
    writer = await response.prepare(request)
    assert writer is not None, "a new response always gets a writer"
    view = memoryview(body)
    try:
        for start in range(0, len(view), WRITE_SLICE):
            await response.write(view[start : start + WRITE_SLICE])
            async with asyncio.timeout(STALL_SECONDS):
                await writer.drain()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        return response  # aiohttp finds the connection gone, and ends it quietly
    except ConnectionError:
        return response  # the client left
    await response.write_eof()
    return response
