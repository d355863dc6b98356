"""The HTTP face: ``/`` landing page, ``/metrics``, ``/health``, ``/ready``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

LANDING = """<!doctype html>
<html><head><title>deployment-watcher</title></head>
<body><h1>deployment-watcher</h1>
<p>Docker deployments as Prometheus metrics.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="health">/health</a></li>
<li><a href="ready">/ready</a></li></ul></body></html>
"""


def make_app(*, registry: CollectorRegistry, ready: Callable[[], bool]) -> web.Application:
    """An aiohttp application serving ``registry``; ``ready()`` says whether Docker is synced."""

    async def landing(request: web.Request) -> web.Response:
        return web.Response(text=LANDING, content_type="text/html")

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        # Rendering thousands of series takes long enough for the Docker daemon to drop
        # events of a client that stops reading: render off the event loop. Collectors only
        # read an immutable snapshot, so a thread is safe.
        body = await asyncio.to_thread(encoder, registry)
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readiness(request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: not connected to the Docker Engine\n")

    app = web.Application()
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", readiness)
    return app
