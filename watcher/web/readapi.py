"""The read API: ``GET /api/v1/deployments[?environment=]``, ``GET /api/v1/deployments/{environment}/{name}``,
the event stream ``GET /api/v1/events`` and its description ``GET /api/v1/openapi.json``.

Behind the same web config as ``/metrics`` (TLS, basic auth). ``POST /api/v1/deployments``
on the same path is the CI/CD API, a source (``watcher.sources.api.reports``): the router
picks the route by method. An answer depends on the state alone: the list is encoded once
per state (and environment), each deployment's row only when it changed, and served from
memory until the state changes.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
from collections.abc import Callable

from aiohttp import web

from watcher.domain.model import Deployment, DeploymentKey, State, iter_sorted
from watcher.domain.settings import RuleSettings
from watcher.web import stream as event_stream
from watcher.web import views
from watcher.wire import REPORTS_PATH

DEPLOYMENTS_PATH = REPORTS_PATH  # GET here; POST is the CI/CD API
OPENAPI_PATH = "/api/v1/openapi.json"
JSON_TYPE = "application/json"


class ReadApi:
    """The read API's routes over ``snapshot()``; the event stream's route is ``stream.handle``."""

    def __init__(
        self, *, snapshot: Callable[[], State], settings: RuleSettings, stream: event_stream.EventStream
    ) -> None:
        self._snapshot = snapshot
        self._settings = settings
        self._stream = stream
        self._openapi = (importlib.resources.files("watcher.web") / "openapi.json").read_bytes()
        self._cached: tuple[State, str | None, bytes] | None = None
        self._rows: dict[DeploymentKey, tuple[Deployment, bytes]] = {}  # each deployment's row, as last encoded

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(DEPLOYMENTS_PATH, self.deployments, allow_head=False),
            web.get(DEPLOYMENTS_PATH + "/{environment}/{name}", self.deployment, allow_head=False),
            web.get(event_stream.PATH, self._stream.handle, allow_head=False),
            web.get(OPENAPI_PATH, self.openapi, allow_head=False),
        ]

    async def deployments(self, request: web.Request) -> web.Response:
        environment = request.query.get("environment")
        state = self._snapshot()
        body = self.cached(state, environment)
        if body is None:
            # Tens of milliseconds at 1,000 deployments: in a worker thread (the state is immutable), not on the loop.
            body = await asyncio.to_thread(self.list_body, state, environment)
        return web.Response(body=body, content_type=JSON_TYPE)

    def cached(self, state: State, environment: str | None) -> bytes | None:
        """The list's JSON when ``state`` is the one it was last encoded from."""
        cached = self._cached
        if cached is not None and cached[0] is state and cached[1] == environment:
            return cached[2]
        return None

    def list_body(self, state: State, environment: str | None) -> bytes:
        """The list as JSON, from memory while the state is the one it was encoded from. After a
        change, only the deployments that changed are encoded again: one that did not is the very
        same object in the new state (copy-on-write), and its row depends on nothing else."""
        body = self.cached(state, environment)
        if body is not None:
            return body
        rows, encoded = self._rows, {}
        for deployment in iter_sorted(state):
            if environment is not None and deployment.key.environment != environment:
                continue
            if deployment.usage_only:
                continue  # a Swarm service judged by another node's watcher, as on /metrics
            known = rows.get(deployment.key)
            row = (
                known[1]
                if known is not None and known[0] is deployment
                else _encode(views.summary(deployment, settings=self._settings))
            )
            encoded[deployment.key] = (deployment, row)
        body = b'{"deployments":[' + b",".join(row for _, row in encoded.values()) + b"]}"
        # Replaced whole, never changed in place: a request on the loop may read it meanwhile.
        self._rows = (
            encoded
            if environment is None
            else {key: known for key, known in {**rows, **encoded}.items() if key in state.deployments}
        )
        self._cached = (state, environment, body)
        return body

    async def deployment(self, request: web.Request) -> web.Response:
        key = DeploymentKey(request.match_info["name"], request.match_info["environment"])
        found = self._snapshot().deployments.get(key)
        if found is None:
            error = {"error": f"no deployment {key.name!r} in environment {key.environment!r}"}
            return web.Response(body=_encode(error), status=404, content_type=JSON_TYPE)
        return web.Response(body=_encode(views.detail(found, settings=self._settings)), content_type=JSON_TYPE)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type=JSON_TYPE)


def _encode(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
