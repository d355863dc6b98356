"""The HTTP face: ``/`` (the board, or a landing page without one), ``/metrics``, ``/health``, ``/ready``."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import hdrs, web

from watcher.exposition.rendering import Exposition
from watcher.web.board import Board

LANDING = """<!doctype html>
<html><head><title>deployment-watcher</title></head>
<body><h1>deployment-watcher</h1>
<p>Docker deployments as Prometheus metrics.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="health">/health</a></li>
<li><a href="ready">/ready</a></li></ul></body></html>
"""


def make_app(*, exposition: Exposition, ready: Callable[[], bool], board: Board | None = None) -> web.Application:
    """An aiohttp application serving ``exposition``; ``ready()`` says whether Docker is synced.
    With ``board``, ``/`` is the board (which links the same pages), else a plain landing page."""

    async def landing(request: web.Request) -> web.Response:
        return web.Response(text=LANDING, content_type="text/html")

    async def metrics(request: web.Request) -> web.Response:
        page = await exposition.page(
            accept=",".join(request.headers.getall(hdrs.ACCEPT, [])),
            accept_encoding=",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, [])),
        )
        return web.Response(body=page.body, headers=page.headers)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readiness(request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: not connected to the Docker Engine\n")

    app = web.Application()
    if board is None:
        app.router.add_get("/", landing)
    else:
        app.add_routes(board.routes())
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", readiness)
    return app
